"""One-step-off-policy rollout against the synchronous loop on W1: the step time ratio.

W1 (shared/notes/benchmarks.md; `rl_step_vs_trl.py` builds it): the W1 model, 16 prompts x 8
samples x exactly 64 new tokens, the `exact_number` verifier, one optimizer step over all 128
sequences; critic off. Both loops run the real `Trainer.step` with one vLLM engine pinned to
core 0 and one learner rank pinned to core 1 (`rollout.cpu_cores`, `learner.cpu_cores`), one
torch thread each, so that the comparison is of overlap and not of core counts: synchronous
(`rollout.max_staleness=0`), the engine and the learner take turns on their own cores;
asynchronous (`=1`), the engine samples batch t+1 while the learner trains on batch t. Each loop
runs `--steps` steps in its own trainer (the other shut down); the first `--warmup` steps are
not counted; medians of the rest.

    .venv/bin/python benchmarks/async_rollout.py [--steps 8 --warmup 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from machine import describe
from rl_step_vs_trl import IgnoreEos, selfcritic_config

PHASES = ("time/step", "time/rollout", "time/learn", "time/sync", "time/rollout_wait")


def run_loop(args, staleness: int, work: Path, cache: Path) -> dict[str, float]:
    """Median seconds per phase of one loop's counted steps, and its staleness."""
    from selfcritic.trainer import Trainer

    cfg = selfcritic_config(args, critic=False, output_dir=work / f"k{staleness}", cache=cache)
    cfg.rollout = dataclasses.replace(
        cfg.rollout, max_staleness=staleness, cpu_cores=[0], threads_per_engine=1
    )
    cfg.learner = dataclasses.replace(cfg.learner, cpu_cores=[1], threads_per_rank=1)
    cfg.trainer = dataclasses.replace(cfg.trainer, steps=args.steps)
    trainer = Trainer(cfg, work / f"k{staleness}")
    try:
        trainer._setup()
        trainer.pool = IgnoreEos(trainer.pool)
        steps = [trainer.step(step) for step in range(1, args.steps + 1)]
    finally:
        trainer._teardown()
    counted = steps[args.warmup :]
    medians = {key: statistics.median(s.get(key, 0.0) for s in counted) for key in PHASES}
    return medians | {"staleness": max(s["rollout/staleness"] for s in counted)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    args.engines, args.engine_threads = 1, 1
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        sync = run_loop(args, 0, work, cache)
        lagged = run_loop(args, 1, work, cache)
    print("| phase (median s) | synchronous (max_staleness=0) | one step off (=1) |")
    print("| --- | --- | --- |")
    for key in PHASES:
        print(f"| {key} | {sync[key]:.3f} | {lagged[key]:.3f} |")
    print(f"| staleness (max) | {sync['staleness']:.0f} | {lagged['staleness']:.0f} |")
    ratio = lagged["time/step"] / sync["time/step"]
    print(f"step time ratio, one step off / synchronous: {ratio:.3f}")


if __name__ == "__main__":
    main()
