"""Verifiers that misbehave, importable by path from worker processes (tests only)."""

import time

from rewards.base import RewardResult


def raises(completion: str, reference: str) -> RewardResult:
    raise ValueError(f"cannot grade {completion!r}")


def hangs(completion: str, reference: str) -> RewardResult:
    if completion == "hang":
        time.sleep(3600)
    return RewardResult(1.0)


def nonsense(completion: str, reference: str):
    return {"score": "high"}


def digit_share(completion: str, reference: str) -> RewardResult:
    """A dense reward, so that a random-init model gets non-zero advantages in a few steps."""
    return RewardResult(sum(c.isdigit() for c in completion) / max(len(completion), 1))
