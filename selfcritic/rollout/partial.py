"""Partial rollouts (Kimi K2): long responses sampled across steps, under each step's weights.

With `rollout.partial_tokens = B`, a step gives each response at most B new tokens. A response
that has not ended by then, and has room left under `sampling.max_tokens` and the context, is
paused: its group is kept (`PausedGroup`), and the next step continues it from where it stopped,
with that step's weights, as a new segment of the same turn (`Trajectory.segments`: the
(start, end, weight version) of every piece, each piece's logprobs those of the weights that
sampled it, so the learner's importance ratios stay right). A group is verified, judged and
trained on only once every response in it has ended: nothing partial is ever scored. A step
spends its `data.prompts_per_step` slots on the paused groups first and starts new prompts in
the rest, so the work in flight stays bounded.

Left out (refused before any work, `selfcritic/trainer.py`): multi-turn environments, where a
paused turn would hold its environment's episode (a tool session) across steps and checkpoints;
dynamic sampling. A stop string split across two segments is not detected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from selfcritic.config import Config, ConfigError, keyed
from selfcritic.envs.base import Prompt, Trajectory
from selfcritic.preflight import Problems, preflight_check
from selfcritic.rollout.episodes import append_tokens
from selfcritic.rollout.types import RolloutEngine, Sample, SamplingSpec

PARTIAL_SEED_STRIDE = 900_000_000  # request indices of continued samples start here


@dataclass
class PausedGroup:
    """A prompt's group of which at least one response is still running."""

    prompt: Prompt
    trajectories: list[Trajectory]


def still_running(trajectory: Trajectory, max_tokens: int, context_len: int) -> bool:
    """Cut by its step's budget (the engine said "length") with room left for more tokens."""
    written = len(trajectory.ids) - trajectory.prompt_length
    return (
        trajectory.turn_finish[-1] == "length"
        and written < max_tokens
        and len(trajectory.ids) < context_len
    )


def split_finished(
    prompts: list[Prompt], groups: list[list[Trajectory]], max_tokens: int, context_len: int
) -> tuple[list[Prompt], list[list[Trajectory]], list[PausedGroup]]:
    """The groups whose responses have all ended (prompts, groups), and the others, paused."""
    done_prompts, done_groups, paused = [], [], []
    for prompt, group in zip(prompts, groups, strict=True):
        if any(still_running(t, max_tokens, context_len) for t in group):
            paused.append(PausedGroup(prompt, group))
        else:
            done_prompts.append(prompt)
            done_groups.append(group)
    return done_prompts, done_groups, paused


def continue_paused(
    engine: RolloutEngine,
    paused: list[PausedGroup],
    spec: SamplingSpec,
    budget: int,
    context_len: int,
) -> None:
    """Give every still-running response of `paused` up to `budget` more tokens (never past
    `spec.max_tokens` new tokens in all, nor the context): one generate call per distinct room,
    each response seeded by its place (group, sample) and the step's seed."""
    by_room: dict[int, list[tuple[int, Trajectory]]] = {}
    n = max((len(group.trajectories) for group in paused), default=0)
    for g, group in enumerate(paused):
        for s, trajectory in enumerate(group.trajectories):
            if still_running(trajectory, spec.max_tokens, context_len):
                written = len(trajectory.ids) - trajectory.prompt_length
                room = min(budget, spec.max_tokens - written, context_len - len(trajectory.ids))
                by_room.setdefault(room, []).append((PARTIAL_SEED_STRIDE + g * n + s, trajectory))
    for room, items in sorted(by_room.items()):
        call = dataclasses.replace(
            spec, n=1, max_tokens=room, request_indices=tuple(index for index, _ in items)
        )
        answers = engine.generate([list(t.ids) for _, t in items], call)
        for (_, trajectory), answer in zip(items, answers, strict=True):
            add_segment(trajectory, answer[0])


def add_segment(trajectory: Trajectory, sample: Sample) -> None:
    """Continue the trajectory's last turn with `sample`'s tokens: a new segment, its own
    weight version; the turn's text, end and finish reason extended to it."""
    if not trajectory.segments:
        trajectory.segments = list(trajectory.turns)  # the first piece of every turn
    start = append_tokens(trajectory, sample)
    trajectory.segments.append((start, len(trajectory.ids), sample.weight_version))
    first, _, version = trajectory.turns[-1]
    trajectory.turns[-1] = (first, len(trajectory.ids), version)
    trajectory.texts[-1] += sample.text
    trajectory.turn_finish[-1] = sample.finish_reason


@preflight_check
def _partial_budget(cfg: Config, problems: Problems) -> None:
    """`rollout.partial_tokens` is below `sampling.max_tokens` (else nothing would ever pause)
    and not combined with `data.dynamic_sampling`."""
    budget = cfg.rollout.partial_tokens
    if budget is None:
        return
    problems.require(
        budget < cfg.sampling.max_tokens,
        "rollout.partial_tokens",
        f"{budget} is not below sampling.max_tokens={cfg.sampling.max_tokens}: no response "
        "would ever pause; lower it, or null to turn partial rollouts off",
    )
    problems.require(
        not cfg.data.dynamic_sampling,
        "rollout.partial_tokens",
        "partial rollouts do not combine with data.dynamic_sampling (a replaced group could "
        "still be running); turn one of them off",
    )


def check_single_turn(env, budget: int | None) -> None:
    """Partial rollouts pause single-turn responses only: a multi-turn environment is refused."""
    turns = getattr(env, "max_turns", 1)
    if budget is not None and turns > 1:
        raise ConfigError(
            keyed(
                "rollout.partial_tokens",
                f"environment {env.name!r} takes up to {turns} turns; partial rollouts pause "
                "single-turn responses only (a paused turn would hold its episode across "
                "steps); null turns them off",
            )
        )
