"""Code rewards: model-written Python run against the task's unit tests in the sandbox.

The completion's code is its last fenced ```python block (or the whole text when there is none);
the reference is the tests source: top-level `test_*` functions that `from solution import ...`.
Score: the fraction of tests passed, or 1/0 with `all_or_nothing`. Containment: rewards/sandbox.py.
"""

from __future__ import annotations

import re

from rewards.base import RewardResult
from rewards.registry import register_verifier
from rewards.sandbox import SandboxLimits, run_tests

_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The last fenced code block, or the whole completion."""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


@register_verifier("python_tests")
def python_tests(
    completion: str,
    reference: str,
    all_or_nothing: bool = False,
    wall_s: float = 10.0,
    cpu_s: int = 5,
    memory_mb: int = 512,
) -> RewardResult:
    """Fraction of the reference's test functions that pass against the completion's code."""
    limits = SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb)
    run = run_tests(extract_code(completion), reference, limits)
    if run.total == 0:
        return RewardResult(0.0, {"error": "the reference holds no test_* functions"})
    fraction = len(run.passed) / run.total
    score = float(fraction == 1.0) if all_or_nothing else fraction
    info = {"passed": len(run.passed), "total": run.total, "isolation": run.isolation}
    if run.timed_out:
        info["reason"] = "sandbox wall-clock timeout"
    if run.stderr:
        info["stderr"] = run.stderr[-500:]
    return RewardResult(score, info)
