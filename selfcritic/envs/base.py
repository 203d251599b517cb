"""The environment contract: what a task gives the loop, and what an episode of it returns.

An environment is the one unit a user plugs in for a task (docs/design.md, "Environments"):
- `prompts(step, draw)`: the prompts of a training step, a pure function of (its seed, step,
  draw), so a resumed run sees the same ones; `held_out()`: a split training never draws;
- `verifier` (a registered name or import path, or None) and `rubric` (the critic's default;
  a `Prompt` may name its own);
- the episode: `reset(prompt) -> Episode` and `step(episode, turn) -> Step`. The model writes a
  turn; the environment answers with an observation (text, which the driver tokenizes, or
  token ids) or ends the episode. A single-turn task ends at the first turn: `SingleTurn` is
  that step function, and the driver then makes exactly the engine call a plain rollout makes.
An episode's record is a `Trajectory`, token in and token out: every token of the sequence with
a loss mask (1 for the model's tokens, 0 for the prompt's and the environment's), the behaviour
logprob of every model token, the weight version of every model turn, and the environment's
per-episode info. The learner consumes trajectories and masks, nothing else.
Optional parts (held-out evaluation, warm-start and PTX corpora, critic probes, chat rendering)
are found with `getattr` by the code that needs them. Left out: the trainer's use of
environments and their registry and config group (the environments issue's next steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Prompt:
    text: str
    reference: str | None  # None: no verifiable answer, the critic alone scores it
    token_budget: int | None = None  # this task's budget; None: reward.token_budget
    rubric: str | None = None  # the critic's rubric for this prompt; None: critic.rubric


@dataclass
class Episode:
    """One episode in progress; `state` is the environment's own."""

    prompt: Prompt
    state: Any = None
    info: dict = field(default_factory=dict)  # the environment's per-episode record


@dataclass(frozen=True)
class Step:
    """The environment's answer to a model turn: an observation to append (text or token
    ids), or the end of the episode."""

    observation: str | tuple[int, ...] | None = None
    done: bool = False


@dataclass
class Trajectory:
    """One episode, token in and token out. `ids[:prompt_length]` is the prompt; after it,
    model turns and observations in order. `loss_mask[t]` is 1 where the model wrote token t;
    `logprobs[t]` its behaviour logprob there (0.0 elsewhere, and everywhere when the engine
    reported none); `turns` the (start, end, weight version) of each model turn in `ids`."""

    prompt: Prompt
    ids: list[int]
    prompt_length: int
    loss_mask: list[int]
    logprobs: list[float]
    turns: list[tuple[int, int, int]]
    texts: list[str]  # what the model wrote, turn by turn
    finish_reason: str  # "done" (the environment ended it), "length" (no room), "turns"
    info: dict = field(default_factory=dict)

    @property
    def completion_ids(self) -> list[int]:
        return self.ids[self.prompt_length :]

    @property
    def completion_mask(self) -> list[int]:
        return self.loss_mask[self.prompt_length :]


class Environment(Protocol):
    """A task: its prompts, its split, its scoring, its episodes."""

    name: str
    verifier: str | None
    rubric: str | None

    def prompts(self, step: int, draw: int) -> list[Prompt]: ...

    def held_out(self) -> list[Prompt]: ...

    def reset(self, prompt: Prompt) -> Episode: ...

    def step(self, episode: Episode, turn: str, turn_ids: tuple[int, ...]) -> Step: ...


class SingleTurn:
    """The episode of a single-turn task: the model answers once and it ends. Environments
    mix it in for `reset` and `step`."""

    def reset(self, prompt: Prompt) -> Episode:
        return Episode(prompt)

    def step(self, episode: Episode, turn: str, turn_ids: tuple[int, ...]) -> Step:
        return Step(done=True)
