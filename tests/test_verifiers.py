"""Math answers, the verifier pool (errors, hangs, timeouts), budgets and the rewards CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from rewards.format import apply_budget, format_regex
from rewards.math_answer import math_answer
from rewards.pool import VerifierPool

MATH_TABLE = [
    # (gold, prediction, expected verdict)
    ("0.5", r"The answer is \boxed{\frac{1}{2}}", True),
    (r"\frac{1}{2}", "0.5", True),
    ("1/2", r"$\frac{2}{4}$", True),
    ("2", r"\boxed{2}", True),
    ("2", "so the result is 2.", True),
    ("2", r"\boxed{2.0}", True),
    ("2", r"\boxed{3}", False),
    ("-3", r"\boxed{-3}", True),
    ("-3", r"\boxed{3}", False),
    ("1000", r"\boxed{1,000}", True),
    ("1000", r"\boxed{1000.00}", True),
    ("x^2+2x+1", r"\boxed{(x+1)^2}", True),
    ("x^2+2x+1", r"\boxed{(x-1)^2}", False),
    (r"\sqrt{2}/2", r"\boxed{\frac{1}{\sqrt{2}}}", True),
    (r"\sqrt{2}", r"\boxed{2^{1/2}}", True),
    (r"\pi", r"\boxed{\pi}", True),
    (r"\pi", r"\boxed{3.14}", False),
    (r"2\pi", r"\boxed{\pi \cdot 2}", True),
    (r"\{1, 2\}", r"\boxed{\{2, 1\}}", True),
    (r"\{1, 2\}", r"\boxed{\{1, 3\}}", False),
    ("(1, 2)", r"\boxed{(1,2)}", True),
    ("[0, 1]", r"\boxed{[0,1]}", True),
    ("[0, 1]", r"\boxed{(0,1)}", False),
    ("5", r"\boxed{5 \text{ cm}}", True),
    ("5", r"\boxed{5\text{ meters}}", True),
    ("12", r"First 3, then 4, and at last \boxed{12}", True),
    ("12", r"I guess \boxed{12} or maybe \boxed{13}", False),
    ("3", "", False),
    ("3", "~~~}}{{ garbage ((", False),
    ("3", r"\boxed{", False),
    ("3", "five", False),
    ("7", r"\boxed{\frac{14}{2}}", True),
    (r"25\%", r"\boxed{25\%}", True),
    ("e", r"\boxed{e}", True),
]


@pytest.mark.parametrize(("gold", "prediction", "expected"), MATH_TABLE)
def test_math_table(gold, prediction, expected):
    assert math_answer(prediction, gold).score == float(expected)


def test_math_numeric_tolerance():
    assert math_answer(r"\boxed{3.1416}", "3.14159").score == 0.0
    assert math_answer(r"\boxed{3.1416}", "3.14159", rel_tol=1e-4).score == 1.0


def test_pool_counts_errors_and_timeouts_and_finishes_the_batch():
    pool = VerifierPool("verifier_fixtures.hangs", workers=2, timeout_s=2.0)
    try:
        start = time.monotonic()
        results, stats = pool.score([("ok", ""), ("hang", ""), ("ok", ""), ("ok", "")])
        assert time.monotonic() - start < 10
        assert [r.score for r in results] == [1.0, 0.0, 1.0, 1.0]
        assert results[1].info["reason"] == "timeout" and stats.timeouts == 1
        again, _ = pool.score([("ok", "")])  # a fresh pool replaced the stuck one
        assert again[0].score == 1.0
    finally:
        pool.close()
    for name in ("verifier_fixtures.raises", "verifier_fixtures:nonsense"):
        pool = VerifierPool(name, workers=1, timeout_s=10.0)
        try:
            results, stats = pool.score([("a", "b"), ("c", "d")])
        finally:
            pool.close()
        assert [r.score for r in results] == [0.0, 0.0] and stats.errors == 2


def test_hung_samples_stall_a_long_batch_by_about_the_timeout_and_lose_nothing():
    """40 samples on 2 workers with a 2 s timeout: one hang is given up on after about 2 s (a
    batch-wide deadline of timeout x rounds would wait 40 s); two hangs hold both workers, and a
    fresh pool scores everything after them instead of timing it out."""
    pool = VerifierPool("verifier_fixtures.hangs", workers=2, timeout_s=2.0)
    try:
        for hangs in ({1}, {0, 1}):
            items = [("hang" if i in hangs else "ok", "") for i in range(40)]
            start = time.monotonic()
            results, stats = pool.score(items)
            assert time.monotonic() - start < 20
            assert [r.score for r in results] == [0.0 if i in hangs else 1.0 for i in range(40)]
            assert stats.timeouts == len(hangs)
            assert all(results[i].info["reason"] == "timeout" for i in hangs)
    finally:
        pool.close()


def test_math_and_code_in_workers():
    pool = VerifierPool("math", workers=2, timeout_s=10.0)
    try:
        results, stats = pool.score([(r"\boxed{\frac{1}{2}}", "0.5"), ("no idea", "0.5")])
    finally:
        pool.close()
    assert [r.score for r in results] == [1.0, 0.0] and stats.errors == 0


def test_budget_cuts_and_penalises_only_over_budget():
    assert apply_budget([1, 2, 3], finished=True, budget=5, penalty=0.5) == ([1, 2, 3], 0.0)
    assert apply_budget([1, 2, 3, 4, 5, 6], finished=True, budget=4, penalty=0.5) == (
        [1, 2, 3, 4],
        0.5,
    )
    assert apply_budget([1, 2, 3, 4], finished=False, budget=4, penalty=0.5) == ([1, 2, 3, 4], 0.5)
    assert apply_budget([1, 2, 3, 4], finished=True, budget=4, penalty=0.5) == ([1, 2, 3, 4], 0.0)
    assert apply_budget([1] * 9, finished=False, budget=None, penalty=0.5) == ([1] * 9, 0.0)


def test_format_regex():
    assert format_regex(" 42", "", pattern=r"\s*-?\d+").score == 1.0
    assert format_regex(" 42 because", "", pattern=r"\s*-?\d+").score == 0.0
    assert format_regex("so 42", "", pattern=r"\d+", search=True).score == 1.0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rewards", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_lists_and_scores_whatever_the_response_does(tmp_path):
    listing = _cli("list")
    assert listing.returncode == 0 and "python_tests" in listing.stdout and "nano" in listing.stdout
    tests = tmp_path / "tests.py"
    tests.write_text("from solution import f\n\ndef test_f():\n    assert f() == 1\n")
    cases = {
        "good.py": ("def f():\n    return 1\n", 1.0),
        "crash.py": ("raise SystemExit(3)\n", 0.0),
        "loop.py": ("while True:\n    pass\n", 0.0),
    }
    for name, (code, expected) in cases.items():
        (tmp_path / name).write_text(code)
        result = _cli(
            "score",
            "python_tests",
            "--response",
            str(tmp_path / name),
            "--tests",
            str(tests),
            "--option",
            "wall_s=3",
            "--option",
            "cpu_s=2",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["score"] == expected
    (tmp_path / "answer.txt").write_text(r"\boxed{\frac{3}{4}}")
    (tmp_path / "gold.txt").write_text("0.75")
    result = _cli(
        "score",
        "math",
        "--response",
        str(tmp_path / "answer.txt"),
        "--reference",
        str(tmp_path / "gold.txt"),
    )
    assert json.loads(result.stdout)["score"] == 1.0
    assert _cli("score", "no_such", "--response", str(tmp_path / "answer.txt")).returncode == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_exits_in_verifier_code_are_errors_of_their_sample(workers):
    """sys.exit and os._exit in a verifier: that sample scores 0 with the reason, the others are
    scored, and the process running it (the trainer itself with workers=0) goes on."""
    pool = VerifierPool("verifier_fixtures.exits", workers=workers, timeout_s=30.0)
    try:
        results, stats = pool.score([("ok", ""), ("exit", ""), ("_exit", ""), ("ok", "")])
    finally:
        pool.close()
    assert [r.score for r in results] == [1.0, 0.0, 0.0, 1.0]
    assert results[1].info["error"].startswith("SystemExit: 3")
    assert results[2].info["error"].startswith("ProcessExit: os._exit(4)")
    assert stats.errors == 2 and stats.worker_deaths == 0
    assert stats.by_reason == {"SystemExit": 1, "ProcessExit": 1}


def test_a_dead_worker_costs_its_own_sample_only():
    """A worker killed by a signal in one sample: that sample is "worker died", the batch is
    done long before the 60 s timeout, and a new worker scores what follows."""
    pool = VerifierPool("verifier_fixtures.exits", workers=2, timeout_s=60.0)
    try:
        start = time.monotonic()
        items = [("die" if i in (3, 7) else "ok", "") for i in range(12)]
        results, stats = pool.score(items)
        assert time.monotonic() - start < 30
        assert [r.score for r in results] == [0.0 if i in (3, 7) else 1.0 for i in range(12)]
        assert [results[i].info["reason"] for i in (3, 7)] == ["worker died"] * 2
        assert stats.worker_deaths == 2 and stats.failed == 2
        assert stats.by_reason == {"worker died": 2}
    finally:
        pool.close()


def test_failure_watch_warns_then_stops_on_a_verifier_that_fails_everything():
    from rewards.base import RewardResult
    from rewards.pool import BatchStats, FailureWatch, VerifierFailing

    def batch(failed: int, total: int = 4) -> BatchStats:
        stats = BatchStats()
        for i in range(total):
            error = {"error": "ZeroDivisionError: division by zero"} if i < failed else {}
            stats.count(RewardResult(0.0, error))
        return stats

    watch = FailureWatch(warn_share=0.5, max_failed_steps=2)
    assert watch.observe(batch(2), 4) is None  # half failed: not more than the share
    warning = watch.observe(batch(3), 4)
    assert "3 of 4" in warning and "ZeroDivisionError" in warning
    assert "failed on 4 of 4" in watch.observe(batch(4), 4)  # one step all failed: a warning
    assert watch.observe(batch(1), 4) is None  # the streak breaks
    watch.observe(batch(4), 4)
    with pytest.raises(VerifierFailing, match="every sample of 2 steps"):
        watch.observe(batch(4), 4)
