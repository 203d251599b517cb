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


def exits(completion: str, reference: str) -> RewardResult:
    """sys.exit on "exit", os._exit on "_exit", a hard death (SIGKILL to itself) on "die"."""
    import os
    import signal
    import sys

    if completion == "exit":
        sys.exit(3)
    if completion == "_exit":
        os._exit(4)
    if completion == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return RewardResult(1.0)
