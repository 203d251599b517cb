"""Advantages, the policy losses, KL and logprob gathering, against values worked out by hand;
and the learner's update independent of how a batch is split into micro-batches."""

from __future__ import annotations

import math

import pytest
import torch

from selfcritic.config import LearnerConfig, OptimConfig
from selfcritic.learner.advantages import group_relative, informative_groups, leave_one_out
from selfcritic.learner.learner import Learner, PolicyBatch, token_micro_batches
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.learner.losses import POLICY_LOSSES, LossScale, get_loss, kl_k3

# Two sequences. Sequence 0: tokens with log-ratios 0.1 and 0.5, advantage +1.
# Sequence 1: one token with log-ratio -0.5 (its second position is padding), advantage -1.
NEW = [[0.1, 0.5], [-0.5, 3.0]]
MASK = [[1.0, 1.0], [1.0, 0.0]]
ADV = [1.0, -1.0]
SCALE = LossScale(
    total_sequences=2, total_tokens=3, max_new_tokens=4, clip_eps=0.2, clip_eps_high=0.3, k2_tau=0.5
)


def run_loss(name: str):
    new = torch.tensor(NEW, requires_grad=True)
    loss, stats = get_loss(name)(
        new, torch.zeros(2, 2), torch.tensor(ADV), torch.tensor(MASK), SCALE
    )
    loss.backward()
    return float(loss.detach()), stats, new.grad


e = math.exp
# per-token PPO terms -min(r A, clip(r) A) with clip range [0.8, 1.2]:
T0 = -e(0.1)  # r = 1.105 inside the range
T1 = -1.2  # r = 1.649 clipped at 1.2 (A > 0)
T2 = 0.8  # r = 0.607, A = -1: min(-0.607, -0.8) = -0.8


def test_grpo_by_hand():
    loss, stats, grad = run_loss("grpo")
    assert loss == pytest.approx(((T0 + T1) / 2 + T2) / 2, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    # only the unclipped token carries gradient: d(-e^x / 2 / 2)/dx at 0.1
    assert grad[0, 0] == pytest.approx(-e(0.1) / 4, abs=1e-6)
    assert float(grad[0, 1]) == float(grad[1, 0]) == float(grad[1, 1]) == 0.0


def test_dr_grpo_by_hand():
    loss, _, grad = run_loss("dr_grpo")
    assert loss == pytest.approx((T0 + T1 + T2) / (2 * 4), abs=1e-6)  # sequences x budget
    assert grad[0, 0] == pytest.approx(-e(0.1) / 8, abs=1e-6)


def test_dapo_clip_higher_by_hand():
    loss, stats, _ = run_loss("dapo")
    t1_dapo = -1.3  # upper clip 1 + 0.3
    assert loss == pytest.approx((T0 + t1_dapo + T2) / 3, abs=1e-6)  # all tokens of the batch
    assert stats["clip_fraction"] == pytest.approx(2 / 3)


def test_ppo_by_hand():
    loss, _, _ = run_loss("ppo")
    assert loss == pytest.approx((T0 + T1 + T2) / 3, abs=1e-6)


def test_k2_squared_objective_and_its_gradient_by_hand():
    loss, _, grad = run_loss("k2")
    s0, s1 = 0.1 + 0.5, -0.5  # whole-sequence log ratios (padding excluded)
    q0, q1 = 1.0 - 0.5 * s0, -1.0 - 0.5 * s1  # A - tau * log(pi / pi_old)
    assert loss == pytest.approx((q0**2 + q1**2) / 2, abs=1e-6)
    # d/d logp_t of (A - tau S)^2 / B = 2 (A - tau S)(-tau) / B, the same for each token of it
    assert grad[0, 0] == pytest.approx(2 * q0 * -0.5 / 2, abs=1e-6)
    assert grad[0, 1] == pytest.approx(2 * q0 * -0.5 / 2, abs=1e-6)
    assert grad[1, 0] == pytest.approx(2 * q1 * -0.5 / 2, abs=1e-6)
    assert float(grad[1, 1]) == 0.0


def test_kl_k3_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.0])
    # delta = ref - logp = -0.5 and 0: k3 = e^-0.5 + 0.5 - 1 and 0
    assert torch.allclose(kl_k3(logp, ref), torch.tensor([e(-0.5) - 0.5, 0.0]), atol=1e-7)


def test_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    expected = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(group_relative(rewards), expected, atol=1e-5)
    assert torch.allclose(
        group_relative(rewards, scale=False), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4])
    )
    # RLOO: 1 - mean(0, 0, 1) = 2/3; 0 - mean(1, 0, 1) = -2/3
    assert torch.allclose(
        leave_one_out(rewards[:1]), torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    )
    assert informative_groups(rewards).tolist() == [True, False]


def test_token_micro_batches():
    # rows by length: 2 (row 3), 3, 3, 5, 9; padded size = rows x longest: [2, 3, 3] -> 9;
    # adding 5 -> 4 x 5 = 20 > 10, so a new group; [5] plus 9 -> 18, so 9 goes alone
    assert token_micro_batches([3, 3, 5, 2, 9], max_tokens=10) == [[3, 0, 1], [2], [4]]
    assert token_micro_batches([4, 4], max_tokens=8) == [[0, 1]]
    # long and short rows interleaved: grouped by length, not by position (4 x 2 and 2 x 9)
    assert token_micro_batches([9, 2, 9, 2, 2, 2], max_tokens=18) == [[1, 3, 4, 5], [0, 2]]


def test_pad_batch_marks_completion_targets():
    ids, attention, mask = pad_batch([(1, 5, 6), (1, 7)], [(8, 9), (3,)], pad_id=0)
    assert ids.tolist() == [[1, 5, 6, 8, 9], [1, 7, 3, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    # target j is token j+1: completions start at target len(prompt)-1
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]


def test_pad_batch_takes_loss_masks_and_totals_count_the_models_tokens():
    """An environment's tokens in a completion (loss mask 0) are no targets, and the batch's
    token total, the loss normaliser, counts the model's only; slices keep their masks."""
    from selfcritic.learner.distributed import BatchTotals, split_batch

    masks = [(1, 0), (1,)]
    _, _, mask = pad_batch([(1, 5, 6), (1, 7)], [(8, 9), (3,)], pad_id=0, loss_masks=masks)
    assert mask.tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    batch = PolicyBatch(
        prompts=[(1, 5, 6), (1, 7)],
        completions=[(8, 9), (3,)],
        old_logprobs=[(), ()],
        advantages=[1.0, -1.0],
        temperature=1.0,
        max_new_tokens=2,
        loss_masks=tuple(masks),
    )
    assert BatchTotals.of(batch).tokens == 2  # of 3 completion tokens
    assert [part.loss_masks for part in split_batch(batch, 2)] == [((1, 0),), ((1,),)]


def test_a_masked_last_token_is_not_learned(nano_model_path):
    """A completion whose last token is the environment's (mask 0) gives the update of the
    completion without it (to float noise: the padded shapes differ), and learned, the same
    token would have moved the weights by far more."""
    generator = torch.Generator().manual_seed(1)
    ids = [tuple(torch.randint(3, 99, (n,), generator=generator).tolist()) for n in (4, 6)]
    old = [tuple((-4.6 + 0.1 * torch.randn(len(c), generator=generator)).tolist()) for c in ids]
    common = dict(prompts=[(1, 56, 81)] * 2, advantages=[0.7, -0.4], temperature=1.0)
    masked = PolicyBatch(
        completions=ids,
        old_logprobs=old,
        max_new_tokens=6,
        loss_masks=((1, 1, 1, 0), (1, 1, 1, 1, 1, 0)),
        **common,
    )
    learned = PolicyBatch(completions=ids, old_logprobs=old, max_new_tokens=6, **common)
    cut = PolicyBatch(
        completions=[c[:-1] for c in ids],
        old_logprobs=[o[:-1] for o in old],
        max_new_tokens=6,
        **common,
    )
    updated = []
    for batch in (masked, learned, cut):
        cfg = LearnerConfig(loss="grpo", kl_beta=0.05)
        learner = Learner(nano_model_path, cfg, OptimConfig(qk_clip=False), trust_engine=True)
        metrics = learner.step(batch)
        # parameters only: the router biases count every routed token, a masked one too (its
        # expert ran on it), so router balancing sees the extra token
        weights = {n: p.detach().clone() for n, p in learner.model.named_parameters()}
        updated.append((metrics, weights))
    (with_mask, params_masked), (_, params_learned), (without, params_cut) = updated
    assert with_mask["tokens"] == without["tokens"] == 8
    assert with_mask["loss"] == pytest.approx(without["loss"], rel=1e-5, abs=1e-7)

    def largest_difference(params) -> float:
        return max(float((v - params_cut[n]).abs().max()) for n, v in params.items())

    # float noise, which Muon's orthogonalisation spreads: 1.1e-5 on a 2-core AMD EPYC (below
    # 1e-5 on the Xeon); the learned token moves them a thousand times more (1.1e-2)
    assert largest_difference(params_masked) < 1e-4
    assert largest_difference(params_learned) > 1e-3


def _ppo_batch(reported: bool = False) -> PolicyBatch:
    """8 sequences of unequal lengths; the engine's logprobs `reported`, or not."""
    generator = torch.Generator().manual_seed(2)
    lengths = [3, 9, 5, 12, 7, 4, 10, 6]
    return PolicyBatch(
        prompts=[(1, 56, 81, 98)] * 8,
        completions=[
            tuple(torch.randint(3, 99, (n,), generator=generator).tolist()) for n in lengths
        ],
        old_logprobs=[
            tuple((-4.6 + 0.1 * torch.randn(n, generator=generator)).tolist()) if reported else ()
            for n in lengths
        ],
        advantages=torch.randn(8, generator=generator).tolist(),
        temperature=0.9,
        max_new_tokens=12,
        ptx_sequences=(((1,), (40, 41, 42, 43)),),
        lr_scale=0.7,
    )


def test_merge_updates_by_hand():
    from selfcritic.learner.learner import merge_updates

    steps = [
        {"loss": 1.0, "clip_fraction": 0.0, "ratio_mean": 1.0, "tokens": 5.0, "micro_batches": 1},
        {"loss": 2.0, "clip_fraction": 0.1, "ratio_mean": 1.0, "tokens": 3.0, "micro_batches": 1},
        {"loss": 3.0, "clip_fraction": 0.4, "ratio_mean": 1.2, "tokens": 5.0, "micro_batches": 2},
        {"loss": 6.0, "clip_fraction": 0.2, "ratio_mean": 0.8, "tokens": 3.0, "micro_batches": 1},
    ]
    merged = merge_updates(steps, epochs=2)
    assert merged["loss"] == 3.0 and merged["micro_batches"] == 5 and merged["tokens"] == 8
    assert merged["learner/clip_fraction_epoch_1"] == pytest.approx(0.05)
    assert merged["learner/clip_fraction_epoch_2"] == pytest.approx(0.3)
    assert merged["learner/ratio_mean_epoch_2"] == pytest.approx(1.0)
    assert merged["optimizer_steps"] == 4


def test_update_plan_slices_every_part_of_the_batch():
    from selfcritic.learner.learner import update_plan

    batch = _ppo_batch()
    assert update_plan(batch, 1, 1) == [batch]  # today's single step, the batch itself
    plan = update_plan(batch, 2, 3)
    assert [len(part.prompts) for part in plan] == [3, 3, 2] * 2
    assert [len(part.ptx_sequences) for part in plan] == [1, 0, 0] * 2
    assert plan[0].completions == batch.completions[:3] and plan[3] == plan[0]


def test_the_second_epoch_moves_the_ratio_and_clipping_acts(nano_model_path):
    """From a fixed old policy the first step's ratio is 1 and nothing is clipped; after it the
    ratio leaves 1 and the clip acts."""
    cfg = LearnerConfig(loss="grpo", epochs=2, clip_eps=0.2)
    learner = Learner(nano_model_path, cfg, OptimConfig(qk_clip=False), trust_engine=True)
    metrics = learner.step(_ppo_batch())
    assert metrics["optimizer_steps"] == 2
    assert metrics["learner/ratio_mean_epoch_1"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["learner/clip_fraction_epoch_1"] == 0.0
    assert abs(metrics["learner/ratio_mean_epoch_2"] - 1.0) > 1e-3
    assert metrics["learner/clip_fraction_epoch_2"] > 0.0


@pytest.mark.parametrize("trusted", [True, False])
def test_epochs_are_their_single_updates_in_order(nano_model_path, trusted):
    """2 epochs x 2 minibatches are 4 optimizer steps, each exactly a single update of its
    slice from the old policy fixed before the first (engine logprobs trusted and reported, or
    the learner's own with TIS): QK-Clip and router balancing act after each, at the batch's
    one rate."""
    from dataclasses import replace

    from selfcritic.learner.learner import update_plan

    batch = _ppo_batch(reported=True)
    cfg = LearnerConfig(loss="ppo", kl_beta=0.05, ptx_weight=0.5, tis_cap=2.0)
    optim = OptimConfig(qk_clip_tau=0.12)  # nano heads peak near 0.2: QK-Clip acts
    planned = Learner(
        nano_model_path, replace(cfg, epochs=2, minibatches_per_epoch=2), optim, trusted
    )
    metrics = planned.step(batch)
    single = Learner(nano_model_path, cfg, optim, trusted)
    fixed = replace(batch, before_update=tuple(single.own_logprobs(batch)))
    steps = [single.update(part) for part in update_plan(fixed, 2, 2)]
    assert len(steps) == metrics["optimizer_steps"] == 4
    for name, value in planned.model.state_dict().items():
        assert torch.equal(value, single.model.state_dict()[name]), name
    clipped = [step["muonclip/heads_clipped"] for step in steps]
    assert all(count > 0 for count in clipped) and metrics["muonclip/heads_clipped"] == sum(clipped)
    adamw = planned.optimizer.optimizers["adamw"]
    assert all(state["step"] == 4 for state in adamw.state.values())
    assert metrics["lr_scale"] == 0.7 and all(step["lr_scale"] == 0.7 for step in steps)


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
    first = 1.0 - math.log(1 + e(0.5) + e(1.0))
    second = 0.0 - math.log(2 + e(1.5))
    assert torch.allclose(result, torch.tensor([[first, second]]), atol=1e-6)


@pytest.mark.parametrize("loss", POLICY_LOSSES.names())
def test_one_or_many_micro_batches_give_the_same_update(loss, nano_model_path):
    """The same batch, unequal lengths, split unevenly or not at all: the same new weights."""
    generator = torch.Generator().manual_seed(0)
    lengths = [3, 9, 5, 12, 7, 4, 10, 6]
    batch = PolicyBatch(
        prompts=[(1, 56, 81, 98)] * 8,
        completions=[
            tuple(torch.randint(3, 99, (n,), generator=generator).tolist()) for n in lengths
        ],
        old_logprobs=[
            tuple((-4.6 + 0.1 * torch.randn(n, generator=generator)).tolist()) for n in lengths
        ],
        advantages=torch.randn(8, generator=generator).tolist(),
        temperature=0.9,
        max_new_tokens=12,
    )
    weights = []
    for budget in (10_000, 30):  # one micro-batch, then several of uneven sizes
        cfg = LearnerConfig(loss=loss, max_tokens_per_micro_batch=budget, kl_beta=0.05)
        learner = Learner(nano_model_path, cfg, OptimConfig(qk_clip=False), trust_engine=True)
        metrics = learner.step(batch)
        weights.append(
            (metrics, {n: p.detach().clone() for n, p in learner.model.named_parameters()})
        )
    (one, params_one), (many, params_many) = weights
    assert one["micro_batches"] == 1 and many["micro_batches"] >= 4
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-4, abs=1e-6)
    for name, value in params_one.items():
        assert torch.allclose(value, params_many[name], atol=1e-5), name
