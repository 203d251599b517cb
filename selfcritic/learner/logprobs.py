"""Per-token log-probabilities of completions under a causal LM, at a sampling temperature.

Sequences (prompt + completion) are right-padded into one batch; the logprob of completion token
t is read from the logits at position t-1, divided by the temperature, so it equals what an
engine reports for the distribution it sampled from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    loss_masks: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L], attention mask [B, L] and completion mask [B, L-1]: 1 at each
    completion token's target position, or its `loss_masks` value (0: an environment's token)."""
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(lengths), width), dtype=torch.long)
    completion_mask = torch.zeros((len(lengths), width - 1), dtype=torch.float32)
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        sequence = list(prompt) + list(completion)
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        # target position j predicts token j+1: completion tokens are targets len(p)-1 ...
        completion_mask[row, len(prompt) - 1 : len(sequence) - 1] = (
            1.0 if loss_masks is None else torch.tensor(loss_masks[row], dtype=torch.float32)
        )
    return ids, attention, completion_mask


def token_logprobs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    attention: torch.Tensor,
    temperature: float,
    with_entropy: bool = False,
):
    """Logprob of each next token [B, L-1] under softmax(logits / temperature); with
    `with_entropy`, also the entropy of that distribution at each position [B, L-1] (no grad)."""
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    chosen = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return chosen
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(dim=-1)
    return chosen, entropy
