"""Schedules over the RL steps: pure functions of the (1-based) step.

- `annealed`: a value moved from `start` at step 1 to `final` at the last step, linearly or on a
  half cosine; the sampling temperature uses it (Kimi K1.5/K2 decay it from high, for
  exploration, to low over training).
- `lr_scale_at`: the factor the optimizer's base rates are scaled by at a step: a linear
  warm-up over `warmup_steps`, then constant, or a linear or cosine decay to `final_fraction` of
  the base rates at the last step (the learning-rate schedules of verl's and TRL's actors). With
  `decay_steps` the rates hold until the last `decay_steps` steps and decay over those only:
  warm-up, stable, decay (WSD), Kimi K2's pre-training schedule; the warm-start uses it.

Being functions of the step alone, a resumed run continues them where it stopped: there is no
scheduler state to checkpoint. A run resumed with more `trainer.steps` (allowed) stretches both
over the new length from there, so the rate and the temperature jump back up at that step.
Left out: restarts, per-parameter-group schedules.
"""

from __future__ import annotations

import math

from selfcritic.config import LR_SCHEDULES, Config
from selfcritic.preflight import Problems, preflight_check

__all__ = ["LR_SCHEDULES", "annealed", "lr_scale_at"]


def annealed(step: int, steps: int, start: float, final: float | None, kind: str) -> float:
    """The value for `step` (1-based) of `steps`: `start` throughout when `final` is None, else
    linear or cosine from `start` at step 1 to `final` at the last step."""
    if final is None or steps <= 1:
        return start
    progress = min(max((step - 1) / (steps - 1), 0.0), 1.0)
    if kind == "cosine":
        progress = (1 - math.cos(math.pi * progress)) / 2
    return start + (final - start) * progress


def lr_scale_at(
    step: int,
    steps: int,
    kind: str,
    warmup_steps: int = 0,
    final_fraction: float = 0.1,
    decay_steps: int | None = None,
) -> float:
    """The learning-rate factor of `step` (1-based) of `steps`: step / warmup_steps during the
    warm-up, then 1 (constant) or decayed from 1 to `final_fraction` at the last step; with
    `decay_steps`, 1 until the last `decay_steps` steps, whose first is already below 1."""
    if step <= warmup_steps:
        return step / warmup_steps
    final = None if kind == "constant" else final_fraction
    if decay_steps is None:
        return annealed(step - warmup_steps, steps - warmup_steps, 1.0, final, kind)
    stable_steps = steps - decay_steps
    return annealed(max(step - stable_steps, 0) + 1, decay_steps + 1, 1.0, final, kind)


@preflight_check
def _warmup_within_the_run(cfg: Config, problems: Problems) -> None:
    """`trainer.lr_warmup_steps` below `trainer.steps`."""
    steps = cfg.trainer.steps
    problems.require(
        cfg.trainer.lr_warmup_steps < steps,
        "trainer.lr_warmup_steps",
        f"must be below trainer.steps={steps}",
    )
