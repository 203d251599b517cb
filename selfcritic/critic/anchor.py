"""The anchor set: frozen judged pairs re-judged every N steps to see the critic drift.

The first judged rubric pairs (up to `size`, spread over groups) are frozen with their outcomes.
Every `every` steps they are judged again, in the same batched call as the step's other pairs;
drift is the mean absolute change of their outcomes, and the alarm metric is 1 when it passes
`drift_alarm`. Their questions join the calibration's excluded set, so the critic is never
trained on the pairs that measure it.
"""

from __future__ import annotations

import random

from selfcritic.config import AnchorConfig
from selfcritic.critic.judge import Judged, PairJob


class AnchorSet:
    def __init__(self, cfg: AnchorConfig) -> None:
        self.cfg = cfg
        self.reference: list[tuple[PairJob, float]] = []

    def due(self, step: int) -> bool:
        return bool(self.reference) and self.cfg.every > 0 and step % self.cfg.every == 0

    def jobs(self) -> list[PairJob]:
        return [
            PairJob(("anchor", i), job.question, job.first, job.second, job.aspect, job.description)
            for i, (job, _) in enumerate(self.reference)
        ]

    def freeze(self, judged: list[Judged], rng: random.Random) -> set[str]:
        """Take up to `size` of these judged pairs as the anchor set (once); returns their
        questions, to be excluded from calibration."""
        if self.reference or self.cfg.size <= 0:
            return set()
        chosen = rng.sample(judged, min(self.cfg.size, len(judged)))
        self.reference = [(item.job, item.outcome) for item in chosen]
        return {job.question for job, _ in self.reference}

    def drift(self, rejudged: list[Judged]) -> dict[str, float]:
        """Drift metrics from the anchor jobs judged again (in `jobs()` order)."""
        changes = [
            item.outcome - outcome
            for item, (_, outcome) in zip(rejudged, self.reference, strict=True)
        ]
        drift = sum(abs(c) for c in changes) / len(changes)
        return {
            "critic/anchor_drift": drift,
            "critic/anchor_shift": sum(changes) / len(changes),
            "critic/anchor_alarm": float(drift > self.cfg.drift_alarm),
        }
