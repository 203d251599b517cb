"""Policy losses as pure tensor functions, found by name.

Every loss takes the learner's logprobs of the sampled tokens [B, T] (with grad), the logprobs
they were sampled with [B, T], one advantage per sequence [B] and a mask of completion tokens
[B, T], and returns (loss, stats). `total_sequences` is the number of sequences in the whole
batch, so that micro-batch losses add up to the full-batch loss. Left out: the other GRPO-family
losses, KL to a reference and importance-sampling correction (the learner issue adds them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from selfcritic.registry import Registry

PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
register_loss = POLICY_LOSSES.register
get_loss = POLICY_LOSSES.get


@register_loss("grpo")
def grpo_loss(
    logprobs: torch.Tensor,  # [B, T] learner, with grad
    old_logprobs: torch.Tensor,  # [B, T] sampling-time
    advantages: torch.Tensor,  # [B]
    mask: torch.Tensor,  # [B, T] 1.0 on completion tokens
    clip_eps: float,
    total_sequences: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clipped surrogate, averaged over each sequence's tokens, then over sequences."""
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    adv = advantages.unsqueeze(1)  # [B, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)  # [B, T]
    tokens = mask.sum(dim=1).clamp(min=1)  # [B]
    per_sequence = (per_token * mask).sum(dim=1) / tokens  # [B]
    loss = per_sequence.sum() / total_sequences
    with torch.no_grad():
        was_clipped = ((unclipped - clipped).abs() > 0).float()
        count = mask.sum().clamp(min=1)
        stats = {
            "clip_fraction": float((was_clipped * mask).sum() / count),
            "ratio_mean": float((ratio * mask).sum() / count),
        }
    return loss, stats
