"""Advantages, the GRPO loss and logprob gathering, against values worked out by hand."""

from __future__ import annotations

import math

import torch

from selfcritic.learner.advantages import group_relative
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.learner.losses import grpo_loss


def test_group_relative_advantages():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # group 0: mean 0.5, population std 0.5 -> +-1; group 1: no variance -> zeros
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(group_relative(rewards), expected, atol=1e-5)
    centred = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(group_relative(rewards, scale=False), centred)


def test_grpo_loss_by_hand():
    # Sequence 0: two tokens, ratios e^0.1 (inside clip 0.2) and e^0.5 (clipped at 1.2), A=+1.
    # Sequence 1: one token (second is padding), ratio e^-0.5 (below 0.8), A=-1.
    old = torch.zeros(2, 2)
    new = torch.tensor([[0.1, 0.5], [-0.5, 3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    advantages = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(new, old, advantages, mask, clip_eps=0.2, total_sequences=2)
    seq0 = -(math.exp(0.1) + min(math.exp(0.5), 1.2)) / 2  # min(r*A, clip(r)*A) with A>0
    seq1 = -min(-math.exp(-0.5), -0.8)  # A=-1: min(r*A, clip(r)*A) = min(-0.61, -0.8) = -0.8
    assert abs(float(loss.detach()) - (seq0 + seq1) / 2) < 1e-6
    assert abs(stats["clip_fraction"] - 2 / 3) < 1e-6  # tokens 2 and 3 of 3 real tokens
    loss.backward()
    # only the unclipped token carries gradient: d/dx of -(e^x)/2/2 at x=0.1
    assert abs(float(new.grad[0, 0]) + math.exp(0.1) / 4) < 1e-6
    assert float(new.grad[0, 1]) == 0.0 and float(new.grad[1, 0]) == 0.0
    assert float(new.grad[1, 1]) == 0.0  # padding


def test_micro_batches_add_up_to_the_full_batch():
    torch.manual_seed(0)
    new, old = torch.randn(6, 5), torch.randn(6, 5) * 0.1
    mask = (torch.rand(6, 5) > 0.3).float()
    advantages = torch.randn(6)
    full, _ = grpo_loss(new, old, advantages, mask, 0.2, total_sequences=6)
    parts = sum(
        grpo_loss(new[s], old[s], advantages[s], mask[s], 0.2, total_sequences=6)[0]
        for s in (slice(0, 1), slice(1, 4), slice(4, 6))
    )
    assert torch.allclose(full, parts, atol=1e-6)


def test_pad_batch_marks_completion_targets():
    ids, attention, mask = pad_batch([(1, 5, 6), (1, 7)], [(8, 9), (3,)], pad_id=0)
    assert ids.tolist() == [[1, 5, 6, 8, 9], [1, 7, 3, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # target j is token j+1: completions start at target len(prompt)-1
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


class _TableModel(torch.nn.Module):
    """Logits depend only on the current token: a lookup table we can reason about."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask, use_cache=False):
        return type("Out", (), {"logits": self.table[input_ids]})()


def test_token_logprobs_apply_temperature():
    table = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ids = torch.tensor([[0, 2, 1]])
    result = token_logprobs(_TableModel(table), ids, torch.ones_like(ids), temperature=2.0)
    # token 2 after token 0: logits/2 = [0, .5, 1]; token 1 after token 2: [0, 0, 1.5]
    first = 1.0 - math.log(1 + math.exp(0.5) + math.exp(1.0))
    second = 0.0 - math.log(2 + math.exp(1.5))
    assert torch.allclose(result, torch.tensor([[first, second]]), atol=1e-6)
