"""Verification throughput: the worker pool against serial scoring, same samples, one run.

Math: 200 completions (half right, half wrong, boxed LaTeX fractions and decimals) through the
math-verify verifier. Code: 24 completions through the sandboxed `python_tests` verifier (half
pass, a quarter fail, a quarter loop until their CPU limit). Prints samples per second and the
pool's speed-up.

    .venv/bin/python benchmarks/verify_throughput.py [--workers 2]
"""

from __future__ import annotations

import argparse
import time

from machine import describe

from rewards.pool import VerifierPool

TESTS = "from solution import f\n\ndef test_f():\n    assert f(3) == 9\n"
CODE = {
    "pass": "def f(x):\n    return x * x\n",
    "fail": "def f(x):\n    return x + x\n",
    "loop": "def f(x):\n    while True:\n        pass\n",
}


def math_items(count: int) -> list[tuple[str, str]]:
    items = []
    for i in range(count):
        gold = f"{i + 1}/{i + 2}"
        right = rf"The answer is \boxed{{\frac{{{i + 1}}}{{{i + 2}}}}}"
        wrong = rf"The answer is \boxed{{{(i + 1) / (i + 3):.4f}}}"
        items.append((right if i % 2 == 0 else wrong, gold))
    return items


def code_items(count: int) -> list[tuple[str, str]]:
    kinds = ["pass", "pass", "fail", "loop"]
    return [(CODE[kinds[i % 4]], TESTS) for i in range(count)]


def throughput(name: str, items, workers: int, options: dict) -> float:
    pool = VerifierPool(name, options, workers=workers, timeout_s=30.0)
    try:
        pool.score(items[:2])  # start-up (spawn) is not what we measure
        start = time.perf_counter()
        results, stats = pool.score(items)
        seconds = time.perf_counter() - start
    finally:
        pool.close()
    assert stats.timeouts == 0, stats
    return len(results) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    print(f"{'verifier':14s} {'samples':>7s} {'serial/s':>9s} {'pool/s':>8s} {'speed-up':>8s}")
    cases = [
        ("math", math_items(200), {}),
        ("python_tests", code_items(24), {"cpu_s": 1, "wall_s": 5}),
    ]
    for name, items, options in cases:
        serial = throughput(name, items, 0, options)
        pooled = throughput(name, items, args.workers, options)
        print(f"{name:14s} {len(items):7d} {serial:9.1f} {pooled:8.1f} {pooled / serial:8.2f}")


if __name__ == "__main__":
    main()
