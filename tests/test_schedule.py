"""The step schedules: sampling temperature and learning-rate factor, values worked by hand."""

import math

import pytest

from selfcritic.schedule import annealed, lr_scale_at


def test_temperature_schedule():
    assert annealed(5, 10, 1.0, None, "linear") == 1.0
    assert annealed(1, 11, 1.2, 0.7, "linear") == pytest.approx(1.2)
    assert annealed(6, 11, 1.2, 0.7, "linear") == pytest.approx(0.95)
    assert annealed(11, 11, 1.2, 0.7, "linear") == pytest.approx(0.7)
    midway = 1.2 + (0.7 - 1.2) * (1 - math.cos(math.pi * 0.25)) / 2
    assert annealed(4, 13, 1.2, 0.7, "cosine") == pytest.approx(midway)


def test_lr_scale_constant_with_warmup():
    assert [lr_scale_at(s, 10, "constant", warmup_steps=4) for s in (1, 2, 4, 5, 10)] == [
        0.25,
        0.5,
        1.0,
        1.0,
        1.0,
    ]
    assert lr_scale_at(7, 10, "constant") == 1.0


def test_lr_scale_linear_and_cosine_decay():
    # 30 steps, no warm-up: 1 at step 1, 0.1 at step 30; step 15.5 would be halfway
    assert lr_scale_at(1, 30, "linear", final_fraction=0.1) == pytest.approx(1.0)
    assert lr_scale_at(30, 30, "linear", final_fraction=0.1) == pytest.approx(0.1)
    assert lr_scale_at(11, 30, "linear", final_fraction=0.1) == pytest.approx(1 - 0.9 * 10 / 29)
    # cosine after a 2-step warm-up: decay over steps 3..12, halfway between 7 and 8
    expected = (1 + math.cos(math.pi * 2 / 9)) / 2  # 1 -> 0 on a half cosine, 2/9 of the way
    assert lr_scale_at(5, 12, "cosine", warmup_steps=2, final_fraction=0.0) == pytest.approx(
        expected
    )
    assert lr_scale_at(3, 12, "cosine", warmup_steps=2, final_fraction=0.0) == pytest.approx(1.0)
    assert lr_scale_at(12, 12, "cosine", warmup_steps=2, final_fraction=0.0) == pytest.approx(0.0)
    # past the last step (a run extended on resume): held at the final fraction
    assert lr_scale_at(40, 30, "linear", final_fraction=0.2) == pytest.approx(0.2)


def test_lr_scale_holds_then_decays_over_the_last_steps():
    # 10 steps, the last 4 decaying linearly to 0.2: 1 through step 6, then 0.8 less in 4 steps
    scales = [lr_scale_at(s, 10, "linear", final_fraction=0.2, decay_steps=4) for s in range(1, 11)]
    assert scales == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    # cosine over the last 2 of 6 steps to 0: halfway (0.5) at step 5, 0 at step 6
    assert lr_scale_at(5, 6, "cosine", final_fraction=0.0, decay_steps=2) == pytest.approx(0.5)
    assert lr_scale_at(6, 6, "cosine", final_fraction=0.0, decay_steps=2) == pytest.approx(0.0)
    # constant ignores the decay; decaying over all the steps starts below 1 at step 1
    assert lr_scale_at(9, 10, "constant", decay_steps=4) == 1.0
    assert lr_scale_at(1, 4, "linear", final_fraction=0.0, decay_steps=4) == pytest.approx(0.75)


def test_warm_start_rates_follow_its_schedule():
    from selfcritic.config import WarmStartConfig
    from selfcritic.warmstart import warm_start_lr_scale

    warm = WarmStartConfig(
        steps=250, lr_schedule="cosine", lr_decay_fraction=0.6, lr_final_fraction=0.02
    )
    # held for 100 steps, then 150 decaying: halfway at step 175, 0.02 at step 250
    assert warm_start_lr_scale(warm, 100) == 1.0
    assert warm_start_lr_scale(warm, 175) == pytest.approx(0.51)
    assert warm_start_lr_scale(warm, 250) == pytest.approx(0.02)
    assert warm_start_lr_scale(WarmStartConfig(steps=250), 250) == 1.0  # constant by default
