"""Run a verifier so that nothing the model wrote can crash the run.

An exception or a non-numeric or out-of-range score becomes 0.0 with the reason recorded; the
caller counts them. Wall-clock timeouts and worker processes are rewards/pool.py's job.
"""

from __future__ import annotations

import math

from rewards.base import RewardResult
from rewards.registry import Verifier


def safe_score(
    verifier: Verifier, completion: str, reference: str, options: dict | None = None
) -> RewardResult:
    """Call `verifier`; any failure is a score of 0 with `info["error"]` set."""
    try:
        result = verifier(completion, reference, **(options or {}))
    except BaseException as error:  # model output must never stop training (math-verify's
        # timeout derives from BaseException; KeyboardInterrupt and SystemExit still propagate)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        return RewardResult(0.0, {"error": f"{type(error).__name__}: {error}"})
    score = getattr(result, "score", None)
    if not isinstance(score, int | float) or not math.isfinite(score) or not 0 <= score <= 1:
        return RewardResult(0.0, {"error": f"verifier returned an invalid score: {result!r}"})
    return result
