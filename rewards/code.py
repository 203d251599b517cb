"""Code rewards: model-written Python run in the sandbox (rewards/sandbox.py) against tests.

The completion's code is its last fenced ```python block (or the whole text when there is none).
- `python_tests`: the reference is a tests source, top-level `test_*` functions that
  `from solution import ...`; they run in their own process and call the solution's functions
  through a plain-data proxy (what crosses: rewards/sandbox_files/tests_runner.py). Score: the
  fraction of tests passed, or 1/0 with `all_or_nothing`.
- `humaneval`: the reference is JSON (selfcritic/envs/humaneval.py): the problem's prompt, entry
  point and tests; a body is run after the prompt, a fenced program defining the entry point as
  it is. Score: 1 when the problem's `check` passes.
- `stdio_tests`: the reference is JSON, a list of {"input": ..., "output": ...} cases; the code
  runs as a program once per case with the input on stdin, and its stdout is compared here,
  outside the sandbox, line by line with trailing white space ignored; a case counts only if the
  program also exited by itself with status 0, and the first timeout ends the run (the rest
  fail). Score: the fraction of cases right, or 1/0 with `all_or_nothing`.
All three refuse to run without bubblewrap unless `allow_unsandboxed` is set (rewards/sandbox.py
says what is lost then).
"""

from __future__ import annotations

import json
import re

from rewards.base import RewardResult
from rewards.registry import register_verifier
from rewards.sandbox import SandboxLimits, run_program, run_tests, unsandboxed_refusal

WALL_S, CALL_S = 6.0, 3.0  # the code verifiers' default wall clock per sample and per call
SETUP_S = 3.0  # a run's start, grace and clean-up beyond its wall clock, with room to spare
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
    wall_s: float = WALL_S,
    call_s: float = CALL_S,
    cpu_s: int = 5,
    memory_mb: int = 512,
    allow_unsandboxed: bool = False,
) -> RewardResult:
    """Fraction of the reference's test functions that pass against the completion's code."""
    limits = SandboxLimits(wall_s=wall_s, call_s=call_s, cpu_s=cpu_s, memory_mb=memory_mb)
    run = run_tests(extract_code(completion), reference, limits, allow_unsandboxed)
    if run.total == 0:
        return RewardResult(0.0, {"error": "the reference holds no test_* functions"})
    fraction = len(run.passed) / run.total
    score = float(fraction == 1.0) if all_or_nothing else fraction
    info = {"passed": len(run.passed), "total": run.total, "isolation": run.isolation}
    if run.timed_out:
        info["reason"] = "sandbox wall-clock timeout"
    if run.stderr:
        info["stderr"] = run.stderr[-500:]
    if run.test_log:
        info["test_log"] = run.test_log[-500:]
    return RewardResult(score, info)


@register_verifier("humaneval")
def humaneval(
    completion: str,
    reference: str,
    wall_s: float = WALL_S,
    call_s: float = CALL_S,
    cpu_s: int = 5,
    memory_mb: int = 512,
    allow_unsandboxed: bool = False,
) -> RewardResult:
    """1 when the problem's `check` passes (env=humaneval: selfcritic/envs/humaneval.py)."""
    problem = json.loads(reference)
    code = extract_code(completion)
    if f"def {problem['entry_point']}(" not in code:  # a body: it continues the prompt
        code = problem["prompt"] + completion
    limits = SandboxLimits(wall_s=wall_s, call_s=call_s, cpu_s=cpu_s, memory_mb=memory_mb)
    run = run_tests(code, problem["tests"], limits, allow_unsandboxed)
    info = {"isolation": run.isolation, "timed_out": run.timed_out}
    if run.test_log:
        info["test_log"] = run.test_log[-500:]
    return RewardResult(float(run.passed == ["test_check"]), info)


@register_verifier("stdio_tests")
def stdio_tests(
    completion: str,
    reference: str,
    all_or_nothing: bool = False,
    wall_s: float = WALL_S,
    cpu_s: int = 5,
    memory_mb: int = 512,
    allow_unsandboxed: bool = False,
) -> RewardResult:
    """Fraction of the reference's stdin/stdout cases the completion's program gets right."""
    cases = stdio_cases(reference)
    limits = SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb, output_chars=1 << 20)
    code = extract_code(completion)
    right, timeouts = 0, 0
    for case in cases:  # a case counts when the program ended by itself, with status 0
        run = run_program(code, case["input"], limits, allow_unsandboxed)
        if run.timed_out:
            timeouts += 1
            break  # as a judge would: the rest are not run (the pool's timeout bounds it all)
        right += run.exit_code == 0 and same_output(run.stdout, case["output"])
    fraction = right / len(cases)
    score = float(right == len(cases)) if all_or_nothing else fraction
    return RewardResult(score, {"passed": right, "total": len(cases), "timeouts": timeouts})


def _unready(options: dict, timeout_s: float) -> str | None:
    """Why the verifier would refuse or time out every sample here (VerifierPool asks before
    any work): no sandbox, or a pool timeout that would cut the sandbox's own wall clock."""
    wall_s = float(options.get("wall_s", WALL_S))
    if timeout_s < wall_s + SETUP_S:
        return (
            f"reward.timeout_s={timeout_s} leaves less than {SETUP_S} s beyond the sandbox's "
            f"wall clock (wall_s={wall_s}) for its start and clean-up: a slow but honest "
            "solution would count as a verifier timeout; raise reward.timeout_s or lower "
            "reward.verifier_options.wall_s"
        )
    return unsandboxed_refusal(bool(options.get("allow_unsandboxed", False)))


python_tests.unready = stdio_tests.unready = humaneval.unready = _unready


def stdio_cases(reference: str) -> list[dict]:
    """The cases of a stdio_tests reference, or ValueError saying what is wrong with it."""
    cases = json.loads(reference)
    if not isinstance(cases, list) or not cases:
        raise ValueError("a stdio_tests reference is a non-empty JSON list of cases")
    for index, case in enumerate(cases):
        if not (isinstance(case, dict) and {"input", "output"} <= case.keys()):
            raise ValueError(f"stdio_tests case {index} needs 'input' and 'output'")
        if not all(isinstance(case[key], str) for key in ("input", "output")):
            raise ValueError(f"stdio_tests case {index}: 'input' and 'output' must be strings")
    return cases


def same_output(produced: str, expected: str) -> bool:
    """Equal line by line, ignoring trailing white space on each line and at the end."""

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.rstrip().splitlines()]

    return lines(produced) == lines(expected)
