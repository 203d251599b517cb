"""The reward protocol: what a verifier returns and what a rubric holds."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RewardResult:
    """A verifier's score in [0, 1] and why (`info["reason"]` names failures)."""

    score: float
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RubricAspect:
    """One thing the critic compares two responses on."""

    name: str
    description: str
    weight: float = 1.0
    mandatory: bool = False


@dataclass(frozen=True)
class Rubric:
    """A named list of aspects."""

    name: str
    aspects: tuple[RubricAspect, ...]
