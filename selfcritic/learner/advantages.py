"""Advantages from a [groups, n] reward table, as pure functions, found by name.

- `group_relative`: reward minus its group's mean, divided by the group's std when `scale`
  (GRPO), or not (Dr. GRPO and Kimi's objective use r - mean r);
- `leave_one_out`: reward minus the mean of the other n-1 rewards of its group (RLOO);
- `informative_groups`: groups whose rewards are not all equal (the others carry no signal;
  DAPO's dynamic sampling drops and refills them).
"""

from __future__ import annotations

import torch

from selfcritic.preflight import require_registered
from selfcritic.registry import Registry


def group_relative(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """[G, n] -> [G, n]; a group whose rewards are all equal gets zeros."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return centred / (std + eps)


def leave_one_out(rewards: torch.Tensor) -> torch.Tensor:
    """[G, n] -> [G, n]: r_i - mean_{j != i} r_j (needs n >= 2)."""
    n = rewards.shape[1]
    others = (rewards.sum(dim=1, keepdim=True) - rewards) / (n - 1)
    return rewards - others


def informative_groups(rewards: torch.Tensor, atol: float = 1e-9) -> torch.Tensor:
    """[G] bool: groups with any reward variance."""
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) > atol


ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")
ADVANTAGE_ESTIMATORS.register("grpo")(lambda rewards: group_relative(rewards, scale=True))
ADVANTAGE_ESTIMATORS.register("mean")(lambda rewards: group_relative(rewards, scale=False))
ADVANTAGE_ESTIMATORS.register("rloo")(leave_one_out)


require_registered(ADVANTAGE_ESTIMATORS, "learner.advantage", __name__)
