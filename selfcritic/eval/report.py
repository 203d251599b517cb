"""The end-of-run report: the held-out evaluation before RL (after warm-start) against the last.

From a run's `metrics.jsonl` (the rows that carry `eval/` metrics): a table on stdout, and in the
run directory `report.json`, `report.md` and `report.png` (the headline curves against the step:
actor accuracy, critic agreement, defect rate, clean answers, and the exploitable claim rate).
The trainer also logs the figure and the table to wandb.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from selfcritic.tracking import json_lines

# (metric, label, better when higher)
REPORT_METRICS = (
    ("eval/accuracy", "held-out accuracy (arithmetic)", True),
    ("eval/critic_agreement_correct", "critic agreement with the verifier", True),
    ("eval/critic_agreement_style", "critic agreement with the oracle (style)", True),
    ("eval/defect_rate", "defect rate (rubric-only tasks)", False),
    ("eval/claim_rate", "exploitable claim rate", False),
    ("eval/clean_rate", "clean answers (rubric-only tasks)", True),
    ("eval/answer_kept_rate", "the word kept (rubric-only tasks)", True),
    ("eval/critic_invalid_rate", "critic invalid verdicts", False),
    ("eval/critic_position_consistency", "critic position consistency", True),
    ("eval/critic_verdict_consistency", "critic verdict consistency (ties count)", True),
    ("eval/critic_injection_flip_rate", "critic injection flip rate", False),
    ("eval/response_chars", "response length (characters)", False),
)
CURVES = (
    "eval/accuracy",
    "eval/critic_agreement_correct",
    "eval/defect_rate",
    "eval/clean_rate",
    "eval/claim_rate",
)


def evaluation_rows(metrics_path: Path) -> list[dict]:
    """The records of `metrics.jsonl` that hold an evaluation, by step."""
    rows = [record for _, record in json_lines(metrics_path) if "eval/accuracy" in record]
    return sorted(rows, key=lambda r: r["step"])


def summarise(rows: list[dict]) -> dict:
    """{metric: {"start", "end", "change"}} between the first and the last evaluation."""
    first, last = rows[0], rows[-1]
    summary = {"start_step": first["step"], "end_step": last["step"], "metrics": {}}
    for key, _, _ in REPORT_METRICS:
        start, end = first.get(key, math.nan), last.get(key, math.nan)
        summary["metrics"][key] = {"start": start, "end": end, "change": end - start}
    return summary


def table(summary: dict) -> str:
    """The report as a Markdown table (it reads as plain text too)."""
    lines = [
        f"| metric | after warm-start (step {summary['start_step']}) "
        f"| after RL (step {summary['end_step']}) | change |",
        "| --- | --- | --- | --- |",
    ]
    for key, label, _ in REPORT_METRICS:
        values = summary["metrics"][key]
        chars = key == "eval/response_chars"
        fmt = (lambda v: f"{v:.1f}") if chars else (lambda v: f"{100 * v:.1f}%")
        change = f"{values['change']:+.1f}" if chars else f"{100 * values['change']:+.1f} pts"
        lines.append(f"| {label} | {fmt(values['start'])} | {fmt(values['end'])} | {change} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {key: label for key, label, _ in REPORT_METRICS}
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for axis, key in zip(axes, CURVES, strict=True):
        points = [(r["step"], r[key]) for r in rows if not math.isnan(r.get(key, math.nan))]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axis.set_title(labels[key], fontsize=9)
        axis.set_xlabel("RL step")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(run_dir: Path) -> tuple[str, Path] | None:
    """Write report.json, report.md and report.png into `run_dir`; (table, png), or None when
    the run holds no evaluation."""
    rows = evaluation_rows(run_dir / "metrics.jsonl")
    if not rows:
        return None
    summary = summarise(rows)
    text = table(summary)
    (run_dir / "report.json").write_text(json.dumps(summary | {"rows": rows}, indent=1))
    (run_dir / "report.md").write_text(text + "\n")
    return text, plot(rows, run_dir / "report.png")
