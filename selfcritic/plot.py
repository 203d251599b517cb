"""Curves from a run's `metrics.jsonl`, without wandb: `python -m selfcritic.plot RUN_DIR`.

Writes one PNG per panel into RUN_DIR/plots/ (or `--out DIR`): a panel is the part of a metric's
name before the first "/" (reward, critic, learner, muonclip, moe, rollout, time, ...; names
without a "/", such as weight_version, go to "other"), drawn as a grid of small plots of each of
its metrics against the step. Per-layer series (`.../layer_N`) share one plot. NaN and infinite
points are skipped; a metric with no finite point is left out. `--keys reward critic/agreement`
keeps only the metrics whose names start with one of the prefixes.

A missing, empty or corrupt file is an error naming the file (exit status 2); a last line cut
short (a run killed mid-write) is skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

# Panels in the order a reader looks at them; any other prefix follows, alphabetically.
PANEL_ORDER = ("reward", "critic", "learner", "policy", "muonclip", "moe", "rollout", "time")
OTHER_PANEL = "other"
_LAYER = re.compile(r"^(?P<base>.+)/layer_(?P<index>\d+)$")


class PlotError(Exception):
    """The metrics file cannot be read, or holds nothing to plot."""


def panel_of(key: str) -> str:
    """The panel a metric belongs to: its name up to the first "/", else "other"."""
    return key.split("/", 1)[0] if "/" in key else OTHER_PANEL


def group_by_panel(keys) -> dict[str, list[str]]:
    """{panel: its metric names, sorted}, panels in PANEL_ORDER then alphabetically ("other"
    last). "step" is the x axis, not a metric, and is left out."""
    panels: dict[str, list[str]] = {}
    for key in keys:
        if key != "step":
            panels.setdefault(panel_of(key), []).append(key)

    def rank(panel: str) -> tuple[int, str]:
        if panel in PANEL_ORDER:
            return (0, f"{PANEL_ORDER.index(panel):03d}")
        return (2 if panel == OTHER_PANEL else 1, panel)

    return {panel: sorted(panels[panel]) for panel in sorted(panels, key=rank)}


def read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """The records of a metrics.jsonl and the warnings met reading it."""
    if not path.is_file():
        raise PlotError(f"{path}: no such file (is the argument a run directory?)")
    lines = path.read_text(errors="replace").splitlines()
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records, warnings = [], []
    for position, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if position == len(numbered) - 1:
                warnings.append(f"{path}:{number}: skipped a last line cut short ({error.msg})")
                continue
            raise PlotError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            raise PlotError(f'{path}:{number}: expected a JSON object with a numeric "step"')
        records.append(record)
    if not records:
        raise PlotError(f"{path}: no metrics recorded (empty file)")
    return records, warnings


def collect_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (steps, values)} over the finite numeric points; metrics with none are left out."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        step = float(record["step"])
        for key, value in record.items():
            if key == "step" or not _is_number(value) or not math.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(float(value))
    return series


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _subplots(keys: list[str]) -> list[tuple[str, list[str]]]:
    """(title, keys) per small plot: per-layer series of one metric share a plot."""
    plots: dict[str, list[str]] = {}
    for key in keys:
        match = _LAYER.match(key)
        title = f"{match['base']}/layer_*" if match else key
        plots.setdefault(title, []).append(key)
    for members in plots.values():
        members.sort(key=lambda k: int(m["index"]) if (m := _LAYER.match(k)) else -1)
    return list(plots.items())


def render(run_dir: Path, out_dir: Path | None = None, prefixes=None) -> list[Path]:
    """Write one PNG per panel; returns the files written. Warnings go to stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metrics_path = Path(run_dir) / "metrics.jsonl"
    records, warnings = read_metrics(metrics_path)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    series = collect_series(records)
    if prefixes:
        series = {k: v for k, v in series.items() if any(k.startswith(p) for p in prefixes)}
    if not series:
        wanted = f" matching {' '.join(prefixes)}" if prefixes else ""
        raise PlotError(f"{metrics_path}: no metric{wanted} has a finite value to plot")

    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for panel, keys in group_by_panel(series).items():
        plots = _subplots(keys)
        columns = min(4, len(plots))
        rows = math.ceil(len(plots) / columns)
        figure, axes = plt.subplots(
            rows, columns, figsize=(3.6 * columns, 2.6 * rows), squeeze=False
        )
        for index, (title, members) in enumerate(plots):
            ax = axes[index // columns][index % columns]
            for key in members:
                steps, values = series[key]
                label = key.rsplit("/", 1)[-1] if len(members) > 1 else None
                ax.plot(steps, values, marker="." if len(steps) <= 50 else None, label=label)
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if 1 < len(members) <= 8:
                ax.legend(fontsize=6)
            if index + columns >= len(plots):  # the lowest plot of its column
                ax.set_xlabel("step", fontsize=7)
        for index in range(len(plots), rows * columns):
            axes[index // columns][index % columns].axis("off")
        figure.suptitle(f"{panel}  ({run_dir})", fontsize=9)
        figure.tight_layout()
        path = out_dir / f"{panel}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfcritic.plot",
        description="Render PNG curves, one file per metric panel, from RUN_DIR/metrics.jsonl.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run's output directory")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default RUN_DIR/plots)")
    parser.add_argument(
        "--keys", nargs="+", metavar="PREFIX", help="only metrics whose names start so"
    )
    args = parser.parse_args(argv)
    try:
        written = render(args.run_dir, args.out, args.keys)
    except PlotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
