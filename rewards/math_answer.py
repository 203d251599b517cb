"""Math answers, checked with Hugging Face's math-verify (gold first, then the prediction).

math-verify extracts the final answer from the completion itself (a \\boxed{} answer first, then
a LaTeX or plain expression) and compares symbolically: fractions, decimals, LaTeX, sets,
intervals, units stripped. A plain number reference is wrapped in $...$ so it parses as LaTeX.
`rel_tol` adds a numeric tolerance for answers that are both plain numbers.
Its timeouts use signal.alarm, which only works in a process's main thread: here they are on in
the main thread (the worker processes of rewards/pool.py, or a serial run) and off elsewhere,
where the pool's wall-clock timeout is the guard.
"""

from __future__ import annotations

import math
import threading

from rewards.base import RewardResult
from rewards.registry import register_verifier


def _timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None


def _as_number(parsed: list) -> float | None:
    try:
        value = float(parsed[0])
    except (TypeError, ValueError, IndexError):
        return None
    return value if math.isfinite(value) else None


@register_verifier("math")
def math_answer(
    completion: str,
    reference: str,
    rel_tol: float = 0.0,
    float_rounding: int = 6,
    timeout_s: int = 5,
) -> RewardResult:
    """1.0 when the completion's final answer equals the reference mathematically."""
    from math_verify import parse, verify

    gold_text = reference if ("$" in reference or "\\boxed" in reference) else f"${reference}$"
    gold = parse(gold_text, parsing_timeout=_timeout(timeout_s))
    if not gold:
        return RewardResult(0.0, {"error": f"reference {reference!r} does not parse"})
    predicted = parse(completion, parsing_timeout=_timeout(timeout_s))
    if not predicted:
        return RewardResult(0.0, {"reason": "no final answer found"})
    equal = verify(
        gold, predicted, float_rounding=float_rounding, timeout_seconds=_timeout(timeout_s)
    )
    if not equal and rel_tol > 0:
        a, b = _as_number(gold), _as_number(predicted)
        equal = a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol)
    return RewardResult(float(equal), {"predicted": str(predicted[-1])})
