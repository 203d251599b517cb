"""Group-relative advantages, as pure functions of a [groups, n] reward table."""

from __future__ import annotations

import torch


def group_relative(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages [G, n]: reward minus its group's mean, divided by the group's std if
    `scale` (population std; a group whose rewards are all equal gets zeros)."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return centred / (std + eps)
