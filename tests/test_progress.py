"""The per-step console (selfcritic/progress.py): which form, the time left, the lines."""

from __future__ import annotations

import pytest

from selfcritic.progress import StepConsole, console_mode, format_duration, time_left


@pytest.mark.parametrize(
    ("setting", "terminal", "mode"),
    [
        ("auto", True, "bar"),
        ("auto", False, "line"),  # CI, log files, tests
        ("line", True, "line"),
        ("bar", False, "bar"),
        ("quiet", True, "quiet"),
    ],
)
def test_the_form_follows_the_setting_and_the_terminal(setting, terminal, mode):
    assert console_mode(setting, terminal) == mode


def test_time_left_is_the_recent_pace_without_the_warm_up_step():
    assert time_left([], 5) is None
    assert time_left([30.0], 4) == 120.0  # one step timed: its pace is all there is
    assert time_left([30.0, 2.0, 4.0], 10) == 30.0  # the warm-up step left out
    assert time_left([30.0, 2.0], 0) == 0.0
    assert time_left([30.0, *[100.0] * 5, *[1.0] * 10], 2) == 2.0  # the last 10 steps only


def test_durations_read_as_clock_times():
    assert format_duration(None) == "?"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"


def _run(capsys, setting: str, terminal: bool, first: int = 1) -> list[str]:
    with StepConsole(setting, steps=4, first=first, log_every=2, is_terminal=terminal) as console:
        for step in range(first, 5):
            console.step_done(step, {"reward/mean": 0.5})
    assert len(console.durations) == 5 - first
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]


def test_lines_every_log_every_steps_and_none_when_quiet(capsys):
    assert _run(capsys, "auto", terminal=False) == [
        "step 2/4  reward=0.5",
        "step 4/4  reward=0.5",
    ]
    assert _run(capsys, "quiet", terminal=True) == []


def test_the_bar_keeps_the_lines_and_starts_at_a_resumed_step(capsys):
    lines = _run(capsys, "bar", terminal=True, first=3)
    assert "step 4/4  reward=0.5" in lines
