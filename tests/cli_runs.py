"""The training and evaluation CLIs run as a user runs them, for the end-to-end tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_module(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS...`; fails the test, with the output's tail, unless it exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def evaluate_checkpoint(checkpoint: Path, into: Path, *args: str) -> tuple[dict, str]:
    """`python -m selfcritic.eval CHECKPOINT ARGS... --json FILE`: (its metrics, its output)."""
    result = into / "eval.json"
    done = run_module("selfcritic.eval", str(checkpoint), *args, "--json", str(result), cwd=into)
    return json.loads(result.read_text()), done.stdout


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
