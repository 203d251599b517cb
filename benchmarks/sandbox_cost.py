"""The code sandbox's cost: samples per second now against an earlier revision, same run.

Loads `rewards/sandbox.py` and its `sandbox_files/` of `--baseline-rev` (by default the last
revision of the one-interpreter sandbox: unshare, a nonce, the tests in the solution's process)
from git into a temporary directory, and times both on the same samples: a correct solution
(the start-up cost), a wrong one, and a mix of a half passing, a quarter failing and a quarter
spinning until a 1 s CPU limit; serially and with two threads (each run is subprocesses, so the
threads overlap). Prints samples per second and the ratio now / before.

    .venv/bin/python benchmarks/sandbox_cost.py [--baseline-rev 8ca192d] [--samples 24]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from machine import describe

import rewards.sandbox as current

ROOT = Path(__file__).resolve().parents[1]
TESTS = "from solution import f\n\ndef test_f():\n    assert f(3) == 9\n"
CODE = {
    "pass": "def f(x):\n    return x * x\n",
    "fail": "def f(x):\n    return x + x\n",
    "loop": "def f(x):\n    while True:\n        pass\n",
}
MIX = ["pass", "pass", "fail", "loop"]


def load_baseline(revision: str, into: Path):
    """The sandbox module of `revision`, imported from files written under `into`."""
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", revision, "rewards/sandbox_files/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in ["rewards/sandbox.py", *files]:
        text = subprocess.run(
            ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        (into / path).write_bytes(text)
    spec = importlib.util.spec_from_file_location("baseline_sandbox", into / "rewards/sandbox.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def rate(module, kinds: list[str], threads: int) -> tuple[float, float]:
    """(samples per second, median seconds per sample) over `kinds`."""
    limits = module.SandboxLimits(wall_s=5.0, cpu_s=1)

    def one(kind: str) -> float:
        start = time.perf_counter()
        module.run_tests(CODE[kind], TESTS, limits)
        return time.perf_counter() - start

    one("pass")  # first use: the bwrap probe, the root's library list
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        each = list(pool.map(one, kinds))
    return len(kinds) / (time.perf_counter() - start), statistics.median(each)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-rev", default="8ca192d")
    parser.add_argument("--samples", type=int, default=24)
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        baseline = load_baseline(args.baseline_rev, Path(folder))
        print(
            f"{'samples':12s} {'threads':>7s} {'before/s':>9s} {'now/s':>8s} {'now/before':>10s}"
            f" {'median s before':>15s} {'now':>6s}"
        )
        for name, kinds in (
            ("correct", ["pass"] * args.samples),
            ("wrong", ["fail"] * args.samples),
            ("mix", [MIX[i % 4] for i in range(args.samples)]),
        ):
            for threads in (1, 2):
                before, before_s = rate(baseline, kinds, threads)
                now, now_s = rate(current, kinds, threads)
                print(
                    f"{name:12s} {threads:7d} {before:9.2f} {now:8.2f} {now / before:10.2f}"
                    f" {before_s:15.3f} {now_s:6.3f}",
                    flush=True,
                )
    print(f"end: {describe()}", file=sys.stderr)


if __name__ == "__main__":
    main()
