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


def train_two_steps(
    out: Path, cache_dir: Path, *overrides: str, experiment: str = "nano_quick"
) -> list[dict]:
    """2 steps of `+experiment=EXPERIMENT` with `overrides`, evaluated before step 1 and after
    step 2, trained in this process into `out`; the metrics records."""
    from hydra import compose, initialize_config_dir

    from selfcritic.preflight import validate
    from selfcritic.run import CONF_DIR, to_config
    from selfcritic.trainer import Trainer

    settings = [f"+experiment={experiment}", "trainer.steps=2", "eval.every=2", *overrides]
    settings += [f"trainer.cache_dir={cache_dir}", "tracking.wandb_mode=disabled"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=settings))
    validate(cfg)
    Trainer(cfg, out).run()
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    return records
