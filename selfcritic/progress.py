"""What a training run prints per step: the step's line (`tracking.console_line`) every
`trainer.log_every` steps and, on a terminal, a progress bar over the steps with the time left.

`tracking.console`: `auto` (the default) is `bar` when stdout is a terminal and `line` when it is
not (CI, log files, tests); `bar` draws the bar under the lines; `line` prints the lines only;
`quiet` prints nothing per step. The time left is the mean duration of the last `WINDOW` steps
times the steps left, the run's first step left out once a later one is timed (it pays the
engines' and the learner's warm-up). Left out: the warm-start stage and the evaluations' lines
(the trainer prints those), and any per-phase estimate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from selfcritic.tracking import console_line

WINDOW = 10  # steps the pace is averaged over


def console_mode(setting: str, is_terminal: bool) -> str:
    """`bar`, `line` or `quiet` for the `tracking.console` setting: `auto` is a bar on a
    terminal and lines elsewhere."""
    if setting == "auto":
        return "bar" if is_terminal else "line"
    return setting


def time_left(durations: Sequence[float], remaining: int) -> float | None:
    """Seconds the `remaining` steps should take at the pace of the steps timed so far (their
    durations in order); None before any step is timed."""
    if not durations:
        return None
    if remaining <= 0:
        return 0.0
    paced = durations[1:] or durations  # the first step pays the warm-up
    recent = paced[-WINDOW:]
    return sum(recent) / len(recent) * remaining


def format_duration(seconds: float | None) -> str:
    """`h:mm:ss`, or `m:ss` under an hour; `?` when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StepConsole:
    """The per-step output of the training loop: `with StepConsole(...) as console:` around the
    loop, `console.step_done(step, metrics)` after each step (the bar, if any, ends with the
    block)."""

    def __init__(
        self,
        setting: str,
        steps: int,
        first: int,
        log_every: int,
        is_terminal: bool | None = None,
    ) -> None:
        terminal = sys.stdout.isatty() if is_terminal is None else is_terminal
        self.mode = console_mode(setting, terminal)
        self.steps, self.first, self.log_every = steps, first, log_every
        self.durations: list[float] = []
        self._bar = None
        self._last = time.perf_counter()

    def __enter__(self) -> StepConsole:
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            # the lines printed meanwhile (and the Ray workers' output) scroll above the bar
            self._bar = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[left]} left"),
            )
            self._task = self._bar.add_task(
                "steps", total=self.steps, completed=self.first - 1, left="?"
            )
            self._bar.start()
        self._last = time.perf_counter()
        return self

    def step_done(self, step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        self.durations.append(now - self._last)
        self._last = now
        if self.mode != "quiet" and step % self.log_every == 0:
            print(console_line(step, self.steps, metrics), flush=True)
        if self._bar is not None:
            left = format_duration(time_left(self.durations, self.steps - step))
            self._bar.update(self._task, completed=step, left=left)

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.stop()
