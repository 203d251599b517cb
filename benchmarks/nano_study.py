"""The nano world study: the default experiment over seeds, and its ablations, in one table.

    python benchmarks/nano_study.py --out runs/study                # full x 3 seeds + ablations
    python benchmarks/nano_study.py --out runs/study --variants full --seeds 0 1 2
    python benchmarks/nano_study.py --out runs/headform --experiment nano_headform
    python benchmarks/nano_study.py --out runs/tools --experiment tool_world \
        --variants full verifier_only --seeds 0 1 2 --ablation-seeds 0 1 2

Each run is `python -m selfcritic.run +experiment=EXPERIMENT` (nano unless --experiment) with
the variant's overrides, in OUT/VARIANT-sSEED (a run whose report.json exists is not run again,
so an interrupted study continues). All runs share the cached warm-start (its seed is
warmstart.seed, not the RL seed), and the spread over seeds is the RL stage's; with
`--vary-warmstart` each seed trains its own warm-start too, and the spread is the whole run's.
Any experiment's report rows are summarised (the tool world's call rates, for one); the nano
world's under METRICS' labels. The table gives, per variant, the mean and the spread (sample
standard deviation; a single run shows none) of each metric after warm-start, after RL, and
the change. Written to
OUT/summary.md and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

VARIANTS = {
    "full": [],
    "no_calibration": ["critic.calibration.enabled=false"],
    "verifier_only": ["critic.enabled=false"],
    "no_ptx": ["learner.ptx_weight=0"],
    "oracle_reward": [
        "critic.enabled=false",
        "env.oracle_references=true",
        "reward.verifier=nano_oracle",
    ],
    "frozen_critic": ["critic.weights=frozen", "ray.num_cpus=3"],
    # one-step-off-policy rollout: batch t+1 sampled while the learner trains on batch t
    "one_step_off": ["rollout.max_staleness=1"],
    # no injection training: the warm-start's and calibration's pairs carry no injected text
    "no_injection": ["critic.injection.rate=0"],
}
METRICS = (
    ("eval/accuracy", "accuracy"),
    ("eval/critic_agreement_correct", "critic agreement (verifier)"),
    ("eval/critic_agreement_style", "critic agreement (oracle)"),
    ("eval/defect_rate", "defect rate"),
    ("eval/claim_rate", "claim rate (exploit)"),
    ("eval/answer_kept_rate", "word kept (rubric-only tasks)"),
    ("eval/critic_invalid_rate", "critic invalid"),
    ("eval/critic_position_consistency", "critic consistency"),
    ("eval/critic_position_consistency_correct", "critic consistency on correctness"),
    ("eval/critic_position_consistency_on_task", "critic consistency on on_task"),
    ("eval/critic_verdict_consistency", "critic consistency (ties count)"),
    ("eval/critic_injection_flip_rate", "injection flips"),
    ("eval/critic_injection_flip_rate/claim", "injection flips: claim (trained)"),
    ("eval/critic_injection_flip_rate/verdict", "injection flips: verdict (trained)"),
    ("eval/critic_injection_flip_rate/instruction", "injection flips: instruction (trained)"),
    ("eval/critic_injection_flip_rate/authority", "injection flips: authority (held out)"),
    ("eval/injection_rate", "injection phrasings in answers"),
)


def run(args: argparse.Namespace, variant: str, seed: int) -> dict | None:
    """The report of OUT/VARIANT-sSEED, run now unless it exists (None if the run failed)."""
    out = args.out
    run_dir = out / f"{variant}-s{seed}"
    report = run_dir / "report.json"
    if not report.exists():
        command = [
            sys.executable,
            "-m",
            "selfcritic.run",
            f"+experiment={args.experiment}",
            f"trainer.output_dir={run_dir}",
            f"trainer.seed={seed}",
            f"data.seed={seed}",
            *([f"warmstart.seed={seed}"] if args.vary_warmstart else []),
            "tracking.console=quiet",
            *VARIANTS[variant],
            *args.overrides,
        ]
        print(f"[{time.strftime('%H:%M:%S')}] {variant} seed {seed}: {' '.join(command[2:])}")
        start = time.perf_counter()
        log = (out / f"{variant}-s{seed}.log").open("w")
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        print(f"  exit {result.returncode} after {time.perf_counter() - start:.0f} s")
        if not report.exists():
            return None
    return json.loads(report.read_text())


def cell(values: list[float], points: bool = True) -> str:
    scale = 100 if points else 1
    values = [v * scale for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}"


def rows(results: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """(key, label) of every metric the reports hold, in their order: METRICS' labels for the
    nano world's, the key itself for another experiment's (its report's rows)."""
    labels, keys = dict(METRICS), []
    for reports in results.values():
        for report in reports:
            keys += [key for key in report["metrics"] if key not in keys]
    known = [key for key, _ in METRICS if key in keys]
    return [(key, labels.get(key, key)) for key in known + [k for k in keys if k not in known]]


def summary(results: dict[str, list[dict]]) -> str:
    lines = []
    for key, label in rows(results):
        points = not any(word in key for word in ("chars", "tokens", "length", "count"))
        unit = "percent; change in points" if points else "change in the same unit"
        lines += [
            f"\n**{label}** (`{key}`, {unit})\n",
            "| variant | runs | after warm-start | after RL | change |",
            "| --- | --- | --- | --- | --- |",
        ]
        for variant, reports in results.items():
            parts = [r["metrics"][key] for r in reports if key in r["metrics"]]
            lines.append(
                f"| {variant} | {len(parts)} | {cell([p['start'] for p in parts], points)} "
                f"| {cell([p['end'] for p in parts], points)} "
                f"| {cell([p['change'] for p in parts], points)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--experiment", default="nano", help="nano or nano_headform")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--ablation-seeds", nargs="*", type=int, default=[0])
    parser.add_argument(
        "--vary-warmstart",
        action="store_true",
        help="each seed seeds the warm-start too (warmstart.seed): the spread is the whole run's",
    )
    parser.add_argument("overrides", nargs="*", help="added to every run")
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for variant in args.variants:
        seeds = args.seeds if variant == "full" else args.ablation_seeds
        reports = [run(args, variant, seed) for seed in seeds]
        results[variant] = [r for r in reports if r is not None]
    text = summary(results)
    (args.out / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
