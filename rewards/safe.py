"""Run a verifier so that nothing the model wrote, and nothing the verifier does, ends the run.

An exception, `sys.exit`, `os._exit` (called from Python), or a non-numeric or out-of-range
score becomes 0.0 with the reason in `info["error"]` ("TypeName: message"); the caller counts
them. Only KeyboardInterrupt goes through. Wall-clock timeouts and worker deaths (a C-level exit,
a signal) are rewards/pool.py's job: a process cannot survive those itself.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

from rewards.base import RewardResult
from rewards.registry import Verifier


class ProcessExit(BaseException):
    """Raised in place of `os._exit` while a verifier runs."""


def _refuse_exit(code: int = 0) -> None:
    raise ProcessExit(f"os._exit({code}) called by the verifier")


@contextlib.contextmanager
def _no_process_exit() -> Iterator[None]:
    """`os._exit` raises while the verifier runs (it would end the worker, or in serial mode
    the trainer, with no trace), then is restored."""
    original, os._exit = os._exit, _refuse_exit
    try:
        yield
    finally:
        os._exit = original


def safe_score(
    verifier: Verifier, completion: str, reference: str, options: dict | None = None
) -> RewardResult:
    """Call `verifier`; any failure is a score of 0 with `info["error"]` set."""
    try:
        with _no_process_exit():
            result = verifier(completion, reference, **(options or {}))
    except BaseException as error:  # model output must never stop training (math-verify's
        # timeout derives from BaseException, and verifier code may call sys.exit)
        if isinstance(error, KeyboardInterrupt):
            raise
        return RewardResult(0.0, {"error": f"{type(error).__name__}: {error}"})
    score = getattr(result, "score", None)
    if not isinstance(score, int | float) or not math.isfinite(score) or not 0 <= score <= 1:
        return RewardResult(0.0, {"error": f"invalid score: the verifier returned {result!r}"})
    return result
