"""The environment contract: what a task gives the loop, and what an episode of it returns.

An environment is the one unit a user plugs in for a task (docs/design.md, "Environments"). It
is built from its options (a dataclass whose first field is `name`; selfcritic/envs/registry.py)
and the run's Config, and must be cheap to build (the preflight builds it to check the run):
- `prompts(step, draw, count)`: `count` prompts of a training step, a pure function of (the
  run's `data.seed`, step, draw), so a resumed run sees the same ones (draw > 0: dynamic
  sampling's refills); `held_out()`: a split training never draws (empty: none);
- `verifier` (a registered name or import path, or None) and `rubric` (the critic's default;
  a `Prompt` may name its own);
- the episode: `reset(prompt) -> Episode` and `step(episode, turn, turn_ids) -> Step`. The model
  writes a turn; the environment answers with an observation (text, which the driver tokenizes,
  or token ids) or ends the episode. A single-turn task ends at the first turn: `SingleTurn` is
  that step function, and the driver then makes exactly the engine call a plain rollout makes.
An episode's record is a `Trajectory`, token in and token out: every token of the sequence with
a loss mask (1 for the model's tokens, 0 for the prompt's and the environment's), the behaviour
logprob of every model token, the weight version of every model turn, and the environment's
per-episode info. The learner consumes trajectories and masks, nothing else.
Optional parts, found with `getattr` by the code that needs them (a setting that needs one the
environment lacks is refused before any work, naming the key):
- `max_turns`: model turns an episode may take (default 1; `sampling.max_tokens` is each turn's
  budget). The verifier and the critic see the model's turns joined (`Trajectory.text`);
  judging whole transcripts with their observations is the agentic issue's;
- `evaluate(engine, tokenizer, seed) -> dict[str, float]`: an own held-out suite (without it,
  `eval.every` samples `held_out()` and scores it with the verifier: selfcritic/eval/held_out.py);
  `headline` (metric keys for the console) and `report_metrics` ((key, label, higher is better)
  rows of the end-of-run report);
- `corpus(tokenizer) -> Corpus`: supervised (context, target) pairs for the warm-start
  (`warmstart.enabled`) and the PTX loss (`learner.ptx_weight`);
- `probes(per_aspect, ties, seed) -> list[PairJob]`: labelled critic pairs for the aspect gate
  (`critic.gate.source=env`);
- `episode_metrics(prompts, groups) -> dict[str, float]`: rates of the held-out evaluation's
  episodes (`groups[k]`: prompt k's trajectories) that a hidden oracle computes, added to the
  generic evaluation's metrics (the tool world's call rates);
- `all_prompts()` and `keep_prompts(keep)`: a finite environment's every prompt, which the
  trainer checks for length before any work, and how it leaves out those too long
  (`data.long_prompts`).
Prompts are text: the trainer renders them (selfcritic/model/chat.py, the chat template with
`Prompt.system`). Left out: tool execution (the agentic issue's).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Prompt:
    text: str
    reference: str | None  # None: no verifiable answer, the critic alone scores it
    token_budget: int | None = None  # this task's budget; None: reward.token_budget
    rubric: str | None = None  # the critic's rubric for this prompt; None: critic.rubric, else
    # the environment's
    env: str = ""  # the label of the environment that drew it (set by the trainer)
    system: str | None = None  # a system prompt (a chat template's system turn)
    # the tools offered, as JSON text of a list of function schemas ({"type": "function",
    # "function": {name, description, parameters}}) a chat template renders; None: no tools
    tools: str | None = None


@dataclass
class EnvOptions:
    """The options of an environment that declares none but its name."""

    name: str = "???"


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


OBSERVATION_LABEL = "observation"  # how the critic's transcript marks the environment's turns


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
    turn_finish: list[str] = field(default_factory=list)  # the engine's, per turn: stop | length
    logprobs_reported: bool = True  # False: the engine reported none (`logprobs` all 0.0)
    observations: list[str] = field(default_factory=list)  # the environment's, as text ("":
    # given as ids), one after each model turn but the last
    observation_cuts: int = 0  # observations cut to their budget
    # what the verifier and the critic see where the environment strips a reasoning block
    # (selfcritic/envs/reasoning.py; "" when there is no final part); None: `text`
    answer: str | None = None
    # partial rollouts (selfcritic/rollout/partial.py): the (start, end, weight version) of every
    # piece of a turn sampled in a step of its own; empty: each turn is one piece (`turns`)
    segments: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def pieces(self) -> list[tuple[int, int, int]]:
        """(start, end, weight version) of every piece sampled in one go: the segments of a
        partial rollout, else the turns."""
        return self.segments or self.turns

    @property
    def answer_text(self) -> str:
        """What the verifier judges: `answer` where set, else `text`."""
        return self.text if self.answer is None else self.answer

    @property
    def critic_text(self) -> str:
        """What the critic judges: the answer, after the episode's earlier turns and their
        observations where there were any (each observation in brackets), so a rubric can judge
        the process too (needless calls, results used faithfully)."""
        if not self.observations:
            return self.answer_text
        last = self.texts[-1] if self.answer is None else self.answer
        if len(self.observations) >= len(self.texts):  # out of turns: the last was a call
            return transcript(self.texts, self.observations, last if self.answer else "")
        return transcript(self.texts[:-1], self.observations, last)

    @property
    def completion_ids(self) -> list[int]:
        return self.ids[self.prompt_length :]

    @property
    def completion_mask(self) -> list[int]:
        return self.loss_mask[self.prompt_length :]

    @property
    def text(self) -> str:
        """What the model wrote, its turns joined (the environment's observations left out)."""
        return "".join(self.texts)

    @property
    def engine_finish(self) -> str:
        """The engine's finish reason of the last turn: "stop" or "length"."""
        return self.turn_finish[-1] if self.turn_finish else "stop"

    @property
    def completion_logprobs(self) -> tuple[float, ...]:
        """The behaviour logprobs after the prompt; () when the engine reported none."""
        return tuple(self.logprobs[self.prompt_length :]) if self.logprobs_reported else ()


class Environment(Protocol):
    """A task: its prompts, its split, its scoring, its episodes."""

    name: str
    verifier: str | None
    rubric: str | None

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]: ...

    def held_out(self) -> list[Prompt]: ...

    def reset(self, prompt: Prompt) -> Episode: ...

    def step(self, episode: Episode, turn: str, turn_ids: tuple[int, ...]) -> Step: ...


def transcript(turns, observations, last: str) -> str:
    """An episode as the critic sees it (`Trajectory.critic_text`): each earlier turn with the
    observation that answered it in brackets, then the last turn ("<call>add {...}</call>
    [observation: <result>84</result>] 84")."""
    parts = [
        f"{turn.strip()} [{OBSERVATION_LABEL}: {observation.strip()}]"
        for turn, observation in zip(turns, observations, strict=False)
    ]
    return " ".join([*parts, last.strip()] if last.strip() else parts)


def is_heldout(key: str, fraction: float) -> bool:
    """Whether the item named `key` (a question, a task id) is held out: a hash of it falls
    below `fraction`, so every run, in any order, splits the same way."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


class SingleTurn:
    """The episode of a single-turn task: the model answers once and it ends. Environments
    mix it in for `reset` and `step`."""

    def reset(self, prompt: Prompt) -> Episode:
        return Episode(prompt)

    def step(self, episode: Episode, turn: str, turn_ids: tuple[int, ...]) -> Step:
        return Step(done=True)


Pair = tuple[tuple[int, ...], tuple[int, ...]]  # (context ids, target ids): only targets learned


class Corpus(Protocol):
    """An environment's supervised pairs, for the warm-start and for RL's PTX loss."""

    # (token id, weight) of target tokens that weigh other than 1 in the loss
    token_weights: tuple[tuple[int, float], ...]
    # what the pairs depend on besides the code in `sources`: the warm-start's cache key
    recipe: dict
    sources: tuple[Path, ...]  # the files that make the pairs (their text is in the key too)

    def warm_start_batch(self, rng: random.Random, step: int, steps: int) -> tuple[Pair, ...]:
        """The pairs of warm-start step `step` (1-based) of `steps`."""
        ...

    def ptx_batch(self, rng: random.Random, count: int) -> tuple[Pair, ...]:
        """`count` pairs for one RL step's PTX loss."""
        ...
