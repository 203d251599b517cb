"""The aspect gate: a rubric aspect the critic cannot judge gives no reward.

A rubric aspect reaches the policy only through the critic's verdicts. Where the critic judges
an aspect at chance, its verdicts are noise that the policy still follows; a mandatory aspect
even decides the pair outright (in the nano world, the critic's on_task verdicts near chance
made the asked word drift once the other defects were gone). The gate measures each aspect on
labelled probe pairs and keeps those that fail out of the reward until they pass:

- probes: a fixed set of labelled pairs per aspect, the better response first, drawn once from
  a source (`critic.gate.source`): a name in PROBE_SOURCES, or a JSONL file with one pair per
  line, {"question", "better", "worse", "aspect", "description"};
- measurement: at the first step and every `every` steps the critic judges the probes in both
  orders (in its own batched call, on the judging weights, before the step's pairs); an aspect's
  agreement is the mean of 1 (the better one won), 0.5 (a tie) and 0 (the worse one won), so
  chance is 0.5;
- the rule: an aspect is open while its last agreement is at least `min_agreement`. A closed
  aspect is not judged on the step's pairs (its tokens are saved) and takes no part in the
  score; a mandatory one then no longer overrides the others.

Left out: an aspect with no probe pairs is never gated (correctness is the verifier's to
calibrate); there is no hysteresis (an aspect near the threshold can open and close at
successive measurements); the probes are not trained on, so the measurement is the critic's
skill on pairs of the training distribution, not on the policy's current answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from selfcritic.config import DataConfig, GateConfig
from selfcritic.critic.calibration import agreement
from selfcritic.critic.judge import Judged, PairJob
from selfcritic.registry import Registry

# A probe source: (data settings, pairs per aspect, seed) -> labelled PairJobs, better first.
ProbeSource = Callable[[DataConfig, int, int], list[PairJob]]
PROBE_SOURCES: Registry[ProbeSource] = Registry("probe source")
register_probes = PROBE_SOURCES.register

JSONL_FIELDS = ("question", "better", "worse", "aspect", "description")


def load_probes(cfg: GateConfig, data: DataConfig) -> list[PairJob]:
    """The probe pairs of `cfg.source` (none when the gate is off)."""
    if cfg.source is None:
        return []
    if cfg.source in PROBE_SOURCES:
        return PROBE_SOURCES.get(cfg.source)(data, cfg.pairs_per_aspect, cfg.seed)
    return read_jsonl_probes(Path(cfg.source).expanduser(), cfg.pairs_per_aspect)


def read_jsonl_probes(path: Path, per_aspect: int) -> list[PairJob]:
    """Up to `per_aspect` pairs of each aspect from a JSONL file, in file order; a line that is
    not a JSON object with the five fields (strings) is named with what is wrong."""
    jobs, counts = [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = _probe_row(line, f"{path}:{number}")
        index = counts.get(row["aspect"], 0)
        if index < per_aspect:
            counts[row["aspect"]] = index + 1
            key = ("probe", row["aspect"], index)
            jobs.append(PairJob(key, *(row[name] for name in JSONL_FIELDS)))
    if not jobs:
        raise ValueError(f"critic.gate.source: {path} holds no probe pairs")
    return jobs


def _probe_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"critic.gate.source: {where} is not JSON ({error})") from error
    if not isinstance(row, dict):
        raise ValueError(f"critic.gate.source: {where} is not a JSON object")
    missing = [name for name in JSONL_FIELDS if not isinstance(row.get(name), str)]
    if missing:
        raise ValueError(
            f"critic.gate.source: {where} needs string fields {', '.join(JSONL_FIELDS)}; "
            f"missing or not a string: {', '.join(missing)}"
        )
    return row


def aspect_agreements(judged: Iterable[Judged]) -> dict[str, float]:
    """Per aspect, the mean agreement with the labels of pairs judged with the better one as
    `first`: 1 a win, 0.5 a tie, 0 a loss (chance 0.5)."""
    scores: dict[str, list[float]] = {}
    for item in judged:
        scores.setdefault(item.job.aspect, []).append(agreement(item.outcome))
    return {aspect: sum(values) / len(values) for aspect, values in scores.items()}


class AspectGate:
    """Which aspects may reward, from the critic's last measurement on the probes."""

    def __init__(self, cfg: GateConfig, probes: list[PairJob]) -> None:
        self.cfg, self.probes = cfg, probes
        self.agreement: dict[str, float] = {}  # the last measurement, per probed aspect

    def due(self, step: int) -> bool:
        return bool(self.probes) and (not self.agreement or step % self.cfg.every == 0)

    def update(self, judged: list[Judged]) -> None:
        self.agreement = aspect_agreements(judged)

    def is_open(self, aspect: str) -> bool:
        measured = self.agreement.get(aspect)
        return measured is None or measured >= self.cfg.min_agreement

    def metrics(self) -> dict[str, float]:
        found = {}
        for aspect, value in self.agreement.items():
            found[f"critic/gate_agreement/{aspect}"] = value
            found[f"critic/gate_open/{aspect}"] = float(self.is_open(aspect))
        return found


from selfcritic.data import nano_probes as _nano_probes  # noqa: E402, F401  (registers a source)
