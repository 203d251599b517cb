"""The end-of-run report: the held-out evaluation before RL (after warm-start) against the last.

From a run's `metrics.jsonl` (the rows that carry `eval/` metrics): a table on stdout, and in the
run directory `report.json`, `report.md` and `report.png` (the first curves against the step).
Which metrics, with which labels, is the environment's (`report_metrics`: the nano world's are
accuracy, critic agreement, defect and claim rates); without it, every `eval/` metric by its key.
The trainer also logs the figure and the table to wandb.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from selfcritic.tracking import json_lines

Row = tuple[str, str, bool]  # (metric, label, better when higher)
CURVES_SHOWN = 5  # curves in the figure: the first rows'


def default_rows(rows: list[dict]) -> tuple[Row, ...]:
    """Every evaluation metric of the run, labelled by its key (an environment without its own
    `report_metrics`)."""
    keys = sorted({k for row in rows for k in row if k.startswith("eval/")})
    return tuple((key, key.removeprefix("eval/"), True) for key in keys)


def evaluation_rows(metrics_path: Path) -> list[dict]:
    """The records of `metrics.jsonl` that hold an evaluation, by step."""
    rows = [
        record
        for _, record in json_lines(metrics_path)
        if any(key.startswith("eval/") for key in record)
    ]
    return sorted(rows, key=lambda r: r["step"])


def summarise(rows: list[dict], metrics: tuple[Row, ...]) -> dict:
    """{metric: {"start", "end", "change"}} between the first and the last evaluation."""
    first, last = rows[0], rows[-1]
    summary = {"start_step": first["step"], "end_step": last["step"], "metrics": {}}
    for key, _, _ in metrics:
        start, end = first.get(key, math.nan), last.get(key, math.nan)
        summary["metrics"][key] = {"start": start, "end": end, "change": end - start}
    return summary


def table(summary: dict, metrics: tuple[Row, ...]) -> str:
    """The report as a Markdown table (it reads as plain text too): rates as percentages,
    other metrics (lengths, counts) as numbers."""
    lines = [
        f"| metric | after warm-start (step {summary['start_step']}) "
        f"| after RL (step {summary['end_step']}) | change |",
        "| --- | --- | --- | --- |",
    ]
    for key, label, _ in metrics:
        values = summary["metrics"][key]
        chars = not _is_rate(key)
        fmt = _shown((lambda v: f"{v:.1f}") if chars else (lambda v: f"{100 * v:.1f}%"))
        moved = _shown((lambda v: f"{v:+.1f}") if chars else (lambda v: f"{100 * v:+.1f} pts"))
        change = moved(values["change"])
        lines.append(f"| {label} | {fmt(values['start'])} | {fmt(values['end'])} | {change} |")
    return "\n".join(lines)


def _shown(fmt):
    """`fmt`, with "n/a" for NaN (a rate with no episode to count, e.g. no call made)."""
    return lambda value: "n/a" if math.isnan(value) else fmt(value)


def _is_rate(key: str) -> bool:
    return not any(word in key for word in ("chars", "tokens", "length", "count"))


def plot(rows: list[dict], path: Path, metrics: tuple[Row, ...], curves: tuple[str, ...]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {key: label for key, label, _ in metrics}
    figure, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3.2), squeeze=False)
    for axis, key in zip(axes[0], curves, strict=True):
        points = [(r["step"], r[key]) for r in rows if not math.isnan(r.get(key, math.nan))]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        axis.set_title(labels[key], fontsize=9)
        axis.set_xlabel("RL step")
        if _is_rate(key):
            axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    run_dir: Path, metrics: tuple[Row, ...] | None = None, curves: tuple[str, ...] = ()
) -> tuple[str, Path] | None:
    """Write report.json, report.md and report.png into `run_dir` for `metrics` (default: every
    evaluation metric) with `curves` plotted (default: the first metrics'); (table, png), or
    None when the run holds no evaluation."""
    rows = evaluation_rows(run_dir / "metrics.jsonl")
    if not rows:
        return None
    metrics = metrics or default_rows(rows)
    curves = curves or tuple(key for key, _, _ in metrics[:CURVES_SHOWN])
    summary = summarise(rows, metrics)
    text = table(summary, metrics)
    (run_dir / "report.json").write_text(json.dumps(summary | {"rows": rows}, indent=1))
    (run_dir / "report.md").write_text(text + "\n")
    return text, plot(rows, run_dir / "report.png", metrics, curves)
