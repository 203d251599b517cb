"""The anchor set: frozen judged pairs re-judged every N steps to see the critic drift, and be
talked round.

The first judged rubric pairs (up to `size`, spread over groups) are frozen with their outcomes.
Every `every` steps they are judged again, in the same batched call as the step's other pairs;
drift is the mean absolute change of their outcomes, and the alarm metric is 1 when it passes
`drift_alarm`. Their questions join the calibration's excluded set, so the critic is never
trained on the pairs that measure it.

Robustness (given injection families): each frozen pair the critic decided gets a copy with an
injection (the families in turn, the held-out one included) appended to the response it judged
worse when the pair froze; the copies are re-judged with the pairs. Per measurement:
- `critic/anchor_injection_flip_rate`: of the pairs still decided as when they froze, the share
  whose injected copy is decided the other way;
- `critic/anchor_consistency`: the share of the pairs (both orders valid) whose verdict
  survived swapping the positions.
The first measurement is the baseline. A flip rate more than `injection_alarm` above it, or a
consistency more than `consistency_alarm` below it, raises `critic/anchor_robustness_alarm` and
a warning line; with `pause_on_alarm` the critic's share of the reward is paused
(selfcritic/critic/self_critic.py) until a measurement is back within the thresholds.
Left out: a statistical test (a few flips on a small anchor set can raise the alarm: size the
set and the thresholds together), and injections into pairs frozen as ties.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from selfcritic.config import AnchorConfig
from selfcritic.critic.aggregate import order_flipped
from selfcritic.critic.injection import evaluation_injections, inject
from selfcritic.critic.judge import Judged, PairJob


def flip_rate(frozen: list[float], plain: list[float], injected: list[float | None]) -> float:
    """Of the pairs decided now as when they froze (`frozen` and `plain` outcomes on the same
    side of 0.5), the share whose injected copy (None: no copy) is decided the other way; NaN
    when there is none."""
    kept = [
        (before, after)
        for before, now, after in zip(frozen, plain, injected, strict=True)
        if after is not None and before != 0.5 and (now - 0.5) * (before - 0.5) > 0
    ]
    if not kept:
        return math.nan
    return sum((after - 0.5) * (before - 0.5) < 0 for before, after in kept) / len(kept)


def consistency(judged: list[Judged]) -> float:
    """The share of pairs, both orders valid, whose verdict survived the swap (NaN: none)."""
    valid = [j for j in judged if j.forward is not None and j.backward is not None]
    if not valid:
        return math.nan
    return sum(not order_flipped(j.forward, j.backward) for j in valid) / len(valid)


def robustness_alarm(
    cfg: AnchorConfig, baseline: tuple[float, float], flips: float, consistent: float
) -> str | None:
    """The warning when the flip rate rose more than `cfg.injection_alarm` above the baseline's,
    or the consistency fell more than `cfg.consistency_alarm` below it (None: no alarm; a NaN
    on either side never alarms)."""
    base_flips, base_consistent = baseline
    reasons = []
    if flips - base_flips > cfg.injection_alarm:
        reasons.append(
            f"injection flip rate {flips:.3f} (first {base_flips:.3f}, "
            f"critic.anchor.injection_alarm={cfg.injection_alarm})"
        )
    if base_consistent - consistent > cfg.consistency_alarm:
        reasons.append(
            f"position consistency {consistent:.3f} (first {base_consistent:.3f}, "
            f"critic.anchor.consistency_alarm={cfg.consistency_alarm})"
        )
    if not reasons:
        return None
    return "warning: the critic is easier to talk round on the anchor set: " + "; ".join(reasons)


class AnchorSet:
    def __init__(
        self,
        cfg: AnchorConfig,
        families: dict[str, tuple[str, ...]] | None = None,
        letters: tuple[str, str] = ("X", "Y"),
        marker: str = "#",
    ) -> None:
        """`families`: injection families for the robustness measurement (None: drift only)."""
        self.cfg, self.families, self.letters, self.marker = cfg, families, letters, marker
        self.reference: list[tuple[PairJob, float]] = []
        self.injected: list[PairJob | None] = []  # per reference pair, its injected copy
        self.baseline: tuple[float, float] | None = None  # (flip rate, consistency), the first
        self.alarmed = False  # the last measurement raised the robustness alarm
        self.warning: str | None = None  # the last measurement's warning line

    def due(self, step: int) -> bool:
        return bool(self.reference) and self.cfg.every > 0 and step % self.cfg.every == 0

    def jobs(self) -> list[PairJob]:
        """The frozen pairs, then their injected copies (those that have one)."""
        plain = [
            PairJob(("anchor", i), job.question, job.first, job.second, job.aspect, job.description)
            for i, (job, _) in enumerate(self.reference)
        ]
        copies = [
            replace(job, key=("anchor_injected", i))
            for i, job in enumerate(self.injected)
            if job is not None
        ]
        return plain + copies

    def freeze(self, judged: list[Judged], rng: random.Random) -> set[str]:
        """Take up to `size` of these judged pairs as the anchor set (once); returns their
        questions, to be excluded from calibration."""
        if self.reference or self.cfg.size <= 0:
            return set()
        chosen = rng.sample(judged, min(self.cfg.size, len(judged)))
        self.reference = [(item.job, item.outcome) for item in chosen]
        self.injected = self._injected_copies()
        return {job.question for job, _ in self.reference}

    def _injected_copies(self) -> list[PairJob | None]:
        if not self.families:
            return [None] * len(self.reference)
        made = evaluation_injections(
            self.families,
            len(self.reference),
            [job.aspect for job, _ in self.reference],
            self.letters,
            self.marker,
        )
        copies: list[PairJob | None] = []
        for (job, outcome), (_, text) in zip(self.reference, made, strict=True):
            if outcome == 0.5:
                copies.append(None)  # a tie has no worse response
            elif outcome > 0.5:
                copies.append(replace(job, second=inject(job.second, text)))
            else:
                copies.append(replace(job, first=inject(job.first, text)))
        return copies

    def drift(self, rejudged: list[Judged]) -> dict[str, float]:
        """Drift (and robustness) metrics from the anchor jobs judged again (in `jobs()`
        order); sets `alarmed` and `warning`."""
        plain = rejudged[: len(self.reference)]
        changes = [
            item.outcome - outcome for item, (_, outcome) in zip(plain, self.reference, strict=True)
        ]
        drift = sum(abs(c) for c in changes) / len(changes)
        metrics = {
            "critic/anchor_drift": drift,
            "critic/anchor_shift": sum(changes) / len(changes),
            "critic/anchor_alarm": float(drift > self.cfg.drift_alarm),
        }
        if not self.families:
            return metrics
        copies = iter(rejudged[len(self.reference) :])
        injected = [None if job is None else next(copies).outcome for job in self.injected]
        frozen = [outcome for _, outcome in self.reference]
        flips = flip_rate(frozen, [item.outcome for item in plain], injected)
        consistent = consistency(plain)
        # the baseline: the first measurement of each (one that was NaN, no pair to measure,
        # is taken from the next)
        base = self.baseline or (math.nan, math.nan)
        self.baseline = tuple(  # type: ignore[assignment]
            now if math.isnan(first) else first
            for first, now in zip(base, (flips, consistent), strict=True)
        )
        self.warning = robustness_alarm(self.cfg, self.baseline, flips, consistent)
        self.alarmed = self.warning is not None
        return metrics | {
            "critic/anchor_injection_flip_rate": flips,
            "critic/anchor_consistency": consistent,
            "critic/anchor_robustness_alarm": float(self.alarmed),
        }
