"""The aspect gate: a rubric aspect the critic cannot judge gives no reward.

A rubric aspect reaches the policy only through the critic's verdicts. Where the critic judges
an aspect at chance, its verdicts are noise that the policy still follows; a mandatory aspect
even decides the pair outright, and the policy drifts on it once the other aspects are met
(docs/nano-probe-log.md, the gate runs). The gate measures each aspect on labelled probe pairs
and keeps those that fail out of the reward until they pass:

- probes: a fixed set of labelled pairs per aspect, the better response first, drawn once from
  a source (`critic.gate.source`): "env", the environment's `probes`, or a JSONL file with one
  pair per line, {"question", "better", "worse", "aspect", "description"}; optionally
  `critic.gate.tie_pairs_per_aspect` pairs that tie on the aspect (both responses meet it or
  both fail it, the other defects drawn apart; `"tie": true` in a file). A file is read whole
  before any work: a line that is not a JSON object, lacks a field, has a field of the wrong
  type or a field the format does not know is named (file, line, field);
- measurement: at the first step and every `every` steps the critic judges the probes in both
  orders (in its own batched call, on the judging weights, before the step's pairs); an aspect's
  agreement is the mean of 1 (the better one won), 0.5 (a tie) and 0 (the worse one won), so
  chance is 0.5; on tie probes, the mean of 1 - 2 |outcome - 0.5|: 1 when the two orders cancel,
  0 when one response won both (chance 0.5 too);
- the rule: an aspect is open while its last agreement, and its tie agreement where it has tie
  probes, are at least `min_agreement`. Ties are much of what an aspect judges in RL (the
  answers of a group often meet it alike), and a critic right on labelled pairs can still break
  ties by the other aspects; a mandatory aspect then overrides the others with them (probe V,
  docs/nano-probe-log.md). A closed aspect is not judged on the
  step's pairs (its tokens are saved) and takes no part in the score; a mandatory one then no
  longer overrides the others.

Left out: an aspect with no probe pairs is never gated (correctness is the verifier's to
calibrate; `unchecked_warning` names the others at run start); there is no hysteresis (an
aspect near the threshold can open and close at successive measurements); the probes are not
trained on, so the measurement is the critic's skill on pairs of the training distribution,
not on the policy's current answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from selfcritic.config import Config, CriticConfig, GateConfig
from selfcritic.critic.calibration import agreement
from selfcritic.critic.judge import Judged, PairJob
from selfcritic.preflight import Problems, preflight_check

# An environment's `probes(pairs per aspect, tie pairs per aspect, seed)` -> PairJobs, the
# labelled ones better first and keyed by `probe_key`, the ties keyed by `probe_key(tie=True)`
ProbeSource = Callable[[int, int, int], list[PairJob]]
FROM_ENV = "env"  # critic.gate.source: the environment's probes

JSONL_FIELDS = ("question", "better", "worse", "aspect", "description")
JSONL_OPTIONAL = ("tie",)  # true: the pair ties on the aspect (a tie probe)


def probe_key(aspect: str, index: int, tie: bool = False) -> tuple:
    """The key of a probe job: it tells the gate which probes are ties."""
    return ("tie_probe" if tie else "probe", aspect, index)


def is_tie_probe(job: PairJob) -> bool:
    return job.key[0] == "tie_probe"


def load_probes(cfg: GateConfig, env_probes: ProbeSource | None) -> list[PairJob]:
    """The probe pairs of `cfg.source` (none when the gate is off): the environment's
    (`env_probes`) or a file's."""
    if cfg.source is None:
        return []
    ties = cfg.tie_pairs_per_aspect
    if cfg.source == FROM_ENV:
        return env_probes(cfg.pairs_per_aspect, ties, cfg.seed)
    try:
        return read_jsonl_probes(Path(cfg.source).expanduser(), cfg.pairs_per_aspect, ties)
    except ValueError as error:
        raise ValueError(f"critic.gate.source: {error}") from error


def read_jsonl_probes(path: Path, per_aspect: int, ties_per_aspect: int = 0) -> list[PairJob]:
    """Up to `per_aspect` labelled pairs and `ties_per_aspect` tie pairs (`"tie": true`) of each
    aspect from a JSONL file, in file order. Every line is checked, also those past the counts:
    one that is not a JSON object with the five fields (strings, the aspect not empty), a
    boolean `tie` if any, and no other field raises ValueError naming the file, the line and
    the field."""
    jobs, counts = [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = _probe_row(line, f"{path}:{number}")
        tie = row.get("tie") is True
        index = counts.get((row["aspect"], tie), 0)
        if index < (ties_per_aspect if tie else per_aspect):
            counts[row["aspect"], tie] = index + 1
            key = probe_key(row["aspect"], index, tie)
            jobs.append(PairJob(key, *(row[name] for name in JSONL_FIELDS)))
    if not jobs:
        raise ValueError(f"{path} holds no probe pairs (one JSON object per line)")
    return jobs


def _probe_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not JSON ({error})") from error
    if not isinstance(row, dict):
        raise ValueError(f"{where} is not a JSON object")
    missing = [name for name in JSONL_FIELDS if not isinstance(row.get(name), str)]
    if missing:
        raise ValueError(
            f"{where} needs string fields {', '.join(JSONL_FIELDS)}; "
            f"missing or not a string: {', '.join(missing)}"
        )
    unknown = [name for name in row if name not in JSONL_FIELDS + JSONL_OPTIONAL]
    if unknown:
        raise ValueError(
            f"{where} has unknown field(s) {', '.join(unknown)}; the fields are "
            f"{', '.join(JSONL_FIELDS + JSONL_OPTIONAL)}"
        )
    if not row["aspect"].strip():
        raise ValueError(f"{where}: field aspect is empty; give the rubric aspect's name")
    if not isinstance(row.get("tie", False), bool):
        raise ValueError(f"{where}: field tie must be true or false, got {row['tie']!r}")
    return row


def unchecked_aspects(
    aspects: Iterable[str], probes: Iterable[PairJob], calibrated: str | None = None
) -> list[str]:
    """The names in `aspects` (in order, once each) that no probe pair, labelled or tie,
    covers, leaving out `calibrated` (the aspect the verifier calibrates, where calibration is
    on): the aspects whose verdicts reach the reward with no check of the critic."""
    probed = {job.aspect for job in probes}
    unchecked = [name for name in aspects if name not in probed and name != calibrated]
    return list(dict.fromkeys(unchecked))


def unchecked_warning(
    aspects: Iterable[str], probes: Iterable[PairJob], cfg: CriticConfig
) -> str | None:
    """The run-start warning naming the rubric aspects in use that have no probe pairs (None
    when every one is covered)."""
    calibrated = cfg.calibration.aspect if cfg.calibration.enabled else None
    unchecked = unchecked_aspects(aspects, probes, calibrated)
    if not unchecked:
        return None
    return (
        f"warning: critic aspect(s) {', '.join(unchecked)} have no probe pairs "
        f"(critic.gate.source={cfg.gate.source or 'null'}): their verdicts reach the reward "
        "unchecked. Measure them with `python -m selfcritic.critic check-rubric` and give "
        "labelled pairs (docs/critic.md, Checking a rubric)"
    )


def aspect_agreements(judged: Iterable[Judged]) -> dict[str, float]:
    """Per aspect, the mean agreement with the labels of pairs judged with the better one as
    `first`: 1 a win, 0.5 a tie, 0 a loss (chance 0.5). Tie probes are left out."""
    return _per_aspect_mean(
        (item.job.aspect, agreement(item.outcome)) for item in judged if not is_tie_probe(item.job)
    )


def tie_agreements(judged: Iterable[Judged]) -> dict[str, float]:
    """Per aspect, how far the tie probes were judged a tie: the mean of 1 - 2 |outcome - 0.5|
    (1: the two orders cancel; 0: one response won in both)."""
    return _per_aspect_mean(
        (item.job.aspect, 1 - 2 * abs(item.outcome - 0.5))
        for item in judged
        if is_tie_probe(item.job)
    )


def _per_aspect_mean(scored: Iterable[tuple[str, float]]) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for aspect, score in scored:
        scores.setdefault(aspect, []).append(score)
    return {aspect: sum(values) / len(values) for aspect, values in scores.items()}


class AspectGate:
    """Which aspects may reward, from the critic's last measurement on the probes."""

    def __init__(self, cfg: GateConfig, probes: list[PairJob]) -> None:
        self.cfg, self.probes = cfg, probes
        self.agreement: dict[str, float] = {}  # the last measurement, per probed aspect
        self.tie_agreement: dict[str, float] = {}  # ... on its tie probes, where it has some

    def due(self, step: int) -> bool:
        measured = self.agreement or self.tie_agreement
        return bool(self.probes) and (not measured or step % self.cfg.every == 0)

    def update(self, judged: list[Judged]) -> None:
        self.agreement = aspect_agreements(judged)
        self.tie_agreement = tie_agreements(judged)

    def is_open(self, aspect: str) -> bool:
        measured = (self.agreement.get(aspect), self.tie_agreement.get(aspect))
        return all(value is None or value >= self.cfg.min_agreement for value in measured)

    def metrics(self) -> dict[str, float]:
        found = {}
        for aspect in self.agreement.keys() | self.tie_agreement.keys():
            if aspect in self.agreement:
                found[f"critic/gate_agreement/{aspect}"] = self.agreement[aspect]
            if aspect in self.tie_agreement:
                found[f"critic/gate_tie_agreement/{aspect}"] = self.tie_agreement[aspect]
            found[f"critic/gate_open/{aspect}"] = float(self.is_open(aspect))
        return found


@preflight_check
def _probes_load(cfg: Config, problems: Problems) -> None:
    """A probe file exists and its pairs load (a bad line is named); "env" asks the environment
    (selfcritic/envs/registry.py checks it has probes)."""
    source = cfg.critic.gate.source
    if not cfg.critic.enabled or source in (None, FROM_ENV):
        return
    known = Path(source).expanduser().is_file()
    problems.require(
        known,
        "critic.gate.source",
        f"{source!r} is neither {FROM_ENV!r} (the environment's probes) nor a file; give a "
        "JSONL file of labelled pairs or null to turn the gate off",
    )
    if known:
        try:
            load_probes(cfg.critic.gate, None)
        except (ValueError, KeyError, OSError) as error:
            text = str(error).removeprefix("critic.gate.source: ")
            problems.require(False, "critic.gate.source", text)
