"""The same-compute supervised baseline of an RL run: its warm-start continued instead of RL.

    python benchmarks/sft_baseline.py runs/study/full-s0 [--out DIR]

Reads the RL run's settings (its `config.yaml`) and the RL stage's wall time (its
`metrics.jsonl`: every step's time less its evaluation's), finds the run's cached warm-start
(the same settings give the same cache key), and continues that warm-start's supervised
training on the environment's corpus for as many steps as the warm-start made in that time (its
`history.json` gives the seconds per step), at the RL stage's rates and schedule
(selfcritic/warmstart.py `continue_supervised`). The result is evaluated as the RL run's last
step was, with the same evaluation seed, and OUT/report.json holds both next to the warm-start's
(the RL run's step 0). OUT defaults to RUN-sft. Prints the machine first: a figure from one CPU
is not another's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from machine import describe


def rl_seconds(run_dir: Path) -> float:
    """The RL stage's wall time: the steps' times less their evaluations'."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return sum(r.get("time/step", 0.0) - r.get("time/eval", 0.0) for r in records)


def steps_in(seconds: float, history: dict) -> int:
    """The supervised steps that fit in `seconds` at the warm-start's pace (`history`: its
    losses per step and its seconds)."""
    per_step = history["seconds"] / len(history["loss"])
    return max(1, round(seconds / per_step))


def warm_started(cfg):
    """(the run's cached warm-start, its corpus); the warm-start is trained now if missing."""
    from selfcritic.envs.registry import build_environment, parts
    from selfcritic.trainer import first_part_with, prepared_model
    from selfcritic.warmstart import warm_start

    environments = parts(build_environment(cfg.env, cfg))
    cache = Path(cfg.trainer.cache_dir).expanduser()
    base, tokenizer, _ = prepared_model(cfg, environments, cache)
    corpus = first_part_with(environments, "corpus")(tokenizer)
    return warm_start(cfg, corpus, base, cache), corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an RL run's directory (config.yaml, metrics)")
    parser.add_argument("--out", type=Path, help="default: RUN-sft")
    args = parser.parse_args()
    out = args.out or args.run.with_name(f"{args.run.name}-sft")
    print(f"start: {describe()}", flush=True)

    from selfcritic.eval.__main__ import evaluate_checkpoint, load_config
    from selfcritic.scratch import enter_scratch
    from selfcritic.trainer import EVAL_SEED, step_seed
    from selfcritic.warmstart import continue_supervised

    enter_scratch()
    cfg = load_config("", [], args.run / "config.yaml")
    seconds = rl_seconds(args.run)
    warm, corpus = warm_started(cfg)
    steps = steps_in(seconds, json.loads((warm.parent / "history.json").read_text()))
    print(f"RL stage {seconds:.0f} s: {steps} supervised steps from {warm}", flush=True)
    start = time.perf_counter()
    history = continue_supervised(cfg, corpus, warm, out / "model", steps, cfg.trainer.seed)
    seed = step_seed(cfg.trainer.seed, cfg.trainer.steps, EVAL_SEED)  # the run's last eval's
    metrics = evaluate_checkpoint(out / "model", cfg, seed)
    report = json.loads((args.run / "report.json").read_text())["metrics"]
    rows = {
        key: {
            "warm_start": report[key]["start"],
            "rl": report[key]["end"],
            "supervised": metrics[key],
        }
        for key in report
        if key in metrics
    }
    summary = {
        "run": str(args.run),
        "rl_seconds": seconds,
        "steps": steps,
        "supervised_seconds": history["seconds"],
        "wall_seconds": time.perf_counter() - start,
        "metrics": rows,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    print(f"{'metric':<36} {'warm-start':>10} {'RL':>8} {'supervised':>10}")
    for key, row in rows.items():
        print(f"{key:<36} {row['warm_start']:>10.3f} {row['rl']:>8.3f} {row['supervised']:>10.3f}")
    print(f"end: {describe()}", flush=True)


if __name__ == "__main__":
    main()
