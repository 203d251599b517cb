"""Curves from a run's `metrics.jsonl`, without wandb: `python -m selfcritic.plot RUN_DIR`.

Draws the dashboard of selfcritic/panels.py (the same sections and panels as the wandb
workspace of `python -m selfcritic.dashboard`) into RUN_DIR/plots/ (or `--out DIR`): one PNG
per section (rewards.png, critic_health.png, policy_health.png, optimizer.png,
time_per_phase.png, evaluation.png), a grid of its panels, each panel its metrics against the
step. Patterns are matched against the metrics the file holds; a panel with none of its metrics
is left out, and so is a section with no panel left. Metrics no panel covers go to other.png,
one small plot per metric (per-layer series, `.../layer_N`, share one). NaN and infinite points
are skipped; a metric with no finite point is left out. `--keys reward critic/agreement` keeps
only the metrics whose names start with one of the prefixes.

A missing, empty or corrupt file is an error naming the file (exit status 2); a last line cut
short (a run killed mid-write) is skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from selfcritic.panels import SECTIONS, covered, layout, natural_key

OTHER = "other"  # the figure of the metrics no panel covers
_LAYER = re.compile(r"^(?P<base>.+)/layer_(?P<index>\d+)$")


class PlotError(Exception):
    """The metrics file cannot be read, or holds nothing to plot."""


def figures(names, sections=SECTIONS) -> list[tuple[str, str, list[tuple[str, list[str]]]]]:
    """[(file stem, title, [(plot title, its metric names)])]: one figure per section with
    its panels that have metrics among `names`, then "other" for the names no panel covers
    (any, in its own plot; per-layer series together). "step" is the x axis, not a metric."""
    names = [name for name in names if name != "step"]
    found = [
        (section.key, section.title, [(panel.title, selected) for panel, selected in panels])
        for section, panels in layout(names, sections)
    ]
    rest = sorted((name for name in names if not covered(name, sections)), key=natural_key)
    if rest:
        found.append((OTHER, "other metrics", _subplots(rest)))
    return found


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
    """Write one PNG per section with data, then other.png; returns the files written.
    Warnings go to stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    for stem, title, plots in figures(series):
        figure = _figure(plt, plots, series)
        figure.suptitle(f"{title}  ({run_dir})", fontsize=9)
        figure.tight_layout()
        path = out_dir / f"{stem}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def _figure(plt, plots: list[tuple[str, list[str]]], series: dict):
    """A grid of small plots, each its metrics against the step."""
    from matplotlib.ticker import MaxNLocator

    columns = min(4, len(plots))
    rows = math.ceil(len(plots) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.6 * rows), squeeze=False)
    for index, (title, members) in enumerate(plots):
        ax = axes[index // columns][index % columns]
        for key, label in zip(members, legend_labels(members), strict=True):
            steps, values = series[key]
            ax.plot(steps, values, marker="." if len(steps) <= 50 else None, label=label)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if 1 < len(members) <= 12:
            ax.legend(fontsize=6)
        if index + columns >= len(plots):  # the lowest plot of its column
            ax.set_xlabel("step", fontsize=7)
    for index in range(len(plots), rows * columns):
        axes[index // columns][index % columns].axis("off")
    return figure


def legend_labels(names: list[str]) -> list[str]:
    """Each name without what all of `names` share at the front: whole "/"-separated parts
    (critic/decisive/correct, critic/decisive/no_praise -> correct, no_praise), then, among
    names with no "/" left and none the shared start itself, words up to a "_"
    (critic_agreement_correct -> correct). A lone name stays whole."""
    if len(names) < 2:
        return list(names)
    split = [name.split("/") for name in names]
    shared = 0
    while all(len(parts) > shared + 1 and parts[shared] == split[0][shared] for parts in split):
        shared += 1
    labels = ["/".join(parts[shared:]) for parts in split]
    if any("/" in label for label in labels):
        return labels
    shared_text = os.path.commonprefix(labels)
    if shared_text in labels:  # clip_fraction, clip_fraction_epoch_1: nothing to cut
        return labels
    cut = shared_text.rfind("_") + 1
    return [label[cut:] for label in labels]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfcritic.plot",
        description="Render PNG curves, one file per dashboard section, from "
        "RUN_DIR/metrics.jsonl.",
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
