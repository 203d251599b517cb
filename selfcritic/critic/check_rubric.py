"""Can the critic judge this rubric? Per aspect, its skill on labelled probe pairs.

`python -m selfcritic.critic check-rubric RUBRIC --model PATH --env NAME --probes FILE` (the
command line is in `__main__.py`) gathers probe pairs (the environment's `probes` and/or a JSONL
file in the gate's format, gate.py), keeps those whose aspect is in the rubric, judges them in
both orders with the model as critic, and reports per aspect:
- agreement: as the gate measures it (`gate.aspect_agreements`): the mean of 1 (the better
  response won), 0.5 (a tie) and 0 (the worse one won) over labelled pairs; chance is 0.5;
- position consistency: the share of labelled pairs with both verdicts valid whose winner
  survived the swap of positions (`aggregate.order_flipped`, as `critic/position_consistency`);
- invalid rate: the share of verdicts (two per pair, tie probes included) that held none;
- tie agreement, where there are tie probes (`gate.tie_agreements`);
- the gate's ruling at a threshold (open / closed), or "unchecked" for an aspect no probe covers.
A probe is judged with the rubric's description of its aspect, not the probe's own, so the check
measures the rubric's wording.

Left out: invalid verdicts are not judged again (the gate and calibration measure the critic
itself, so an invalid verdict is the tie it reads as); no confidence intervals (the pair counts
are in the table); whether the probes are good labels is the user's to check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rewards.base import Rubric
from selfcritic.config import GateConfig
from selfcritic.critic.aggregate import order_flipped
from selfcritic.critic.gate import (
    AspectGate,
    aspect_agreements,
    is_tie_probe,
    read_jsonl_probes,
    tie_agreements,
    unchecked_aspects,
)
from selfcritic.critic.judge import Judged, PairJob

UNCHECKED, OPEN, CLOSED = "unchecked", "open", "closed"


@dataclass(frozen=True)
class AspectCheck:
    """The critic's measured skill on one aspect's probes (NaN: nothing to measure)."""

    pairs: int  # labelled probe pairs (each judged in both orders)
    tie_pairs: int
    agreement: float
    tie_agreement: float
    position_consistency: float  # over labelled pairs with both verdicts valid
    invalid_rate: float  # over all verdicts, two per pair, tie pairs included


def aspect_checks(judged: Iterable[Judged]) -> dict[str, AspectCheck]:
    """Per aspect of the judged probes, its `AspectCheck`."""
    judged = list(judged)
    agreements, ties = aspect_agreements(judged), tie_agreements(judged)
    by_aspect: dict[str, list[Judged]] = {}
    for item in judged:
        by_aspect.setdefault(item.job.aspect, []).append(item)
    return {
        aspect: AspectCheck(
            pairs=sum(not is_tie_probe(item.job) for item in items),
            tie_pairs=sum(is_tie_probe(item.job) for item in items),
            agreement=agreements.get(aspect, math.nan),
            tie_agreement=ties.get(aspect, math.nan),
            position_consistency=position_consistency(items),
            invalid_rate=invalid_rate(items),
        )
        for aspect, items in by_aspect.items()
    }


def position_consistency(judged: list[Judged]) -> float:
    """The share of labelled pairs, both verdicts valid, whose winner held in both orders."""
    valid = [item for item in judged if item.valid and not is_tie_probe(item.job)]
    if not valid:
        return math.nan
    flipped = sum(order_flipped(item.forward, item.backward) for item in valid)
    return 1 - flipped / len(valid)


def invalid_rate(judged: list[Judged]) -> float:
    """The share of verdicts (two per pair) that held no verdict."""
    if not judged:
        return math.nan
    invalid = sum((item.forward is None) + (item.backward is None) for item in judged)
    return invalid / (2 * len(judged))


def gate_status(aspect: str, judged: list[Judged], min_agreement: float) -> str:
    """What the gate would make of `aspect` at `min_agreement` after these verdicts."""
    mine = [item for item in judged if item.job.aspect == aspect]
    if not mine:
        return UNCHECKED
    gate = AspectGate(GateConfig(min_agreement=min_agreement), [item.job for item in mine])
    gate.update(mine)
    return OPEN if gate.is_open(aspect) else CLOSED


def rubric_jobs(rubric: Rubric, probes: Iterable[PairJob]) -> tuple[list[PairJob], list[str]]:
    """The probes of the rubric's aspects, each with the rubric's description of its aspect,
    and the names of the other probes' aspects (ignored), once each."""
    described = {aspect.name: aspect.description for aspect in rubric.aspects}
    jobs, ignored = [], []
    for job in probes:
        if job.aspect in described:
            jobs.append(dataclasses.replace(job, description=described[job.aspect]))
        elif job.aspect not in ignored:
            ignored.append(job.aspect)
    return jobs, ignored


def environment_probes(name: str, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
    """The probes of environment `name` at its default options (every part's, for a mixture);
    none when it has no `probes`. An unknown name raises ConfigError listing the known ones."""
    from selfcritic.config import Config
    from selfcritic.envs.registry import build_environment, parts

    env = build_environment({"name": name}, Config())
    found = []
    for part in parts(env).values():
        if hasattr(part, "probes"):
            found += part.probes(per_aspect, ties, seed)
    return found


def file_probes(path: Path, per_aspect: int, ties: int) -> list[PairJob]:
    """A JSONL probe file's pairs (gate.read_jsonl_probes); a missing file raises ValueError."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file; give a JSONL file of labelled pairs")
    return read_jsonl_probes(path, per_aspect, ties)


def check_report(
    rubric: Rubric, judged: list[Judged], letters: tuple[str, str], min_agreement: float
) -> dict:
    """The JSON document: per aspect of the rubric (in its order) its numbers and the gate's
    ruling, the unchecked aspects, and every probe's verdicts."""
    checks = aspect_checks(judged)
    aspects = []
    for aspect in rubric.aspects:
        check = checks.get(aspect.name)
        numbers = dataclasses.asdict(check) if check else {"pairs": 0, "tie_pairs": 0}
        aspects.append(
            {"aspect": aspect.name, "mandatory": aspect.mandatory, "weight": aspect.weight}
            | {key: _finite(value) for key, value in numbers.items()}
            | {"gate": gate_status(aspect.name, judged, min_agreement)}
        )
    return {
        "rubric": rubric.name,
        "min_agreement": min_agreement,
        "aspects": aspects,
        "unchecked": unchecked_aspects([a.name for a in rubric.aspects], [i.job for i in judged]),
        "pairs": [pair_row(item, letters) for item in judged],
    }


def pair_row(item: Judged, letters: tuple[str, str]) -> dict:
    """One probe's verdicts: P(better wins) with the better response shown as each letter."""
    return {
        "aspect": item.job.aspect,
        "tie": is_tie_probe(item.job),
        "question": item.job.question,
        "better": item.job.first,
        "worse": item.job.second,
        f"p_better_wins_shown_as_{letters[0]}": item.forward,
        f"p_better_wins_shown_as_{letters[1]}": None
        if item.backward is None
        else 1 - item.backward,
        "outcome_for_better": item.outcome,
    }


def _finite(value):
    """NaN as None (JSON has no NaN)."""
    return None if isinstance(value, float) and math.isnan(value) else value


COLUMNS = ("aspect", "mandatory", "pairs", "agreement", "consistency", "invalid", "gate")
TIE_COLUMNS = ("tie pairs", "tie agreement")


def table_rows(report: dict) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and the rows of the table, as text; the tie columns only where there are
    tie probes."""
    with_ties = any(row["tie_pairs"] for row in report["aspects"])
    header = COLUMNS[:-1] + (TIE_COLUMNS if with_ties else ()) + COLUMNS[-1:]
    rows = []
    for row in report["aspects"]:
        cells = (
            row["aspect"],
            "yes" if row["mandatory"] else "no",
            str(row["pairs"]),
            _number(row.get("agreement")),
            _number(row.get("position_consistency")),
            _number(row.get("invalid_rate")),
        )
        ties = (str(row["tie_pairs"]), _number(row.get("tie_agreement"))) if with_ties else ()
        rows.append(cells + ties + (row["gate"],))
    return header, rows


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_lines(report: dict) -> list[str]:
    """What follows the table: where the probes came from, the unchecked aspects and the
    probes left aside."""
    sources = report.get("probe_sources", {})
    lines = [f"probe pairs: {', '.join(f'{n} from {s}' for s, n in sources.items()) or 'none'}"]
    lines.append(
        f"gate threshold (critic.gate.min_agreement): {report['min_agreement']}; chance is 0.5"
    )
    if report["unchecked"]:
        lines.append(
            f"unchecked (no probe pairs; their verdicts would reach the reward unchecked): "
            f"{', '.join(report['unchecked'])}"
        )
    ignored = report.get("ignored_probe_aspects")
    if ignored:
        lines.append(f"probes of aspects not in the rubric (not judged): {', '.join(ignored)}")
    return lines


def print_table(report: dict) -> None:
    """The report as a table on stdout: `rich` where it is installed, else plain columns."""
    header, rows = table_rows(report)
    title = f"rubric {report['rubric']}: the critic on labelled probe pairs"
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print("\n".join([title, *_plain_table(header, rows), *summary_lines(report)]))
        return
    table = Table(title=title, box=box.SIMPLE)
    for name in header:
        table.add_column(name, no_wrap=True, justify="left" if name == "aspect" else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=200) if not _is_terminal() else Console()
    console.print(table)
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _plain_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in (header, *rows)
    ]


def _is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()
