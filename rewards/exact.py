"""Exact and numeric answer matching: the nano world's verifiers.

The final answer is the last number in the completion (an "A:" prefix and trailing text are
allowed). Left out: symbolic equivalence (see a math-verify based verifier for that).
"""

from __future__ import annotations

import math
import re

from rewards.base import RewardResult
from rewards.registry import register_verifier

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in `text`, or None when there is none."""
    found = _NUMBER.findall(text)
    return float(found[-1]) if found else None


@register_verifier("exact_number")
def exact_number(completion: str, reference: str, rel_tol: float = 1e-9) -> RewardResult:
    """1.0 when the last number in the completion equals the reference number (within
    `rel_tol`, relative), else 0.0."""
    predicted = last_number(completion)
    if predicted is None:
        return RewardResult(0.0, {"reason": "no number in the response"})
    expected = float(reference)
    equal = math.isclose(predicted, expected, rel_tol=rel_tol, abs_tol=1e-12)
    return RewardResult(float(equal), {"predicted": predicted})


@register_verifier("exact_match")
def exact_match(completion: str, reference: str) -> RewardResult:
    """1.0 when the stripped completion equals the stripped reference."""
    return RewardResult(float(completion.strip() == reference.strip()), {})
