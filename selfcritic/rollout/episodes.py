"""One batched driver for the episodes of a step, single-turn and multi-turn alike.

`run_episodes` advances every episode of a step together:
- the first turn is one generate call for every prompt with `spec.n` samples each: exactly the
  call a plain rollout makes (same request seeds), so a single-turn environment's trajectories
  hold the tokens and logprobs that call gives;
- each later turn is one generate call for all episodes still running, one sample each, over
  the episode's whole sequence so far (prompt, turns, observations), request-seeded by (episode,
  turn) so a resumed run samples the same;
- after every turn the environment's `step` answers: an observation (text is tokenized with
  `encode_observation`, no BOS), appended with loss mask 0, or the end of the episode.
An episode also ends after `max_turns` turns ("turns") or when the context has no room for
another token ("length": an observation is cut at the context); a turn's `max_tokens` shrinks
to the room left. The records are
`Trajectory`s (selfcritic/envs/base.py). Left out: overlapping turns of different episodes
(asynchronous rollout) and tool execution, which an environment's `step` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from selfcritic.envs.base import Environment, Episode, Prompt, Trajectory
from selfcritic.rollout.types import RolloutEngine, Sample, SamplingSpec

TURN_SEED_STRIDE = 100_000_000  # request indices of turn t > 0 start at t * this (draws: 1e6)


@dataclasses.dataclass
class _Running:
    """An episode between turns: its environment state and the trajectory so far."""

    episode: Episode
    trajectory: Trajectory
    index: int  # prompt index x n + sample index: its request seed in later turns


def run_episodes(
    engine: RolloutEngine,
    env: Environment,
    prompts: list[Prompt],
    prompt_ids: list[list[int]],
    spec: SamplingSpec,
    encode_observation: Callable[[str], list[int]],
    context_len: int,
    max_turns: int = 1,
) -> list[list[Trajectory]]:
    """`spec.n` trajectories for each prompt (`prompt_ids` its tokens), in prompt order."""
    groups = engine.generate(prompt_ids, spec)
    running: list[_Running] = []
    result: list[list[Trajectory]] = []
    for p, (prompt, ids, group) in enumerate(zip(prompts, prompt_ids, groups, strict=True)):
        trajectories = []
        for s, sample in enumerate(group):
            episode = env.reset(prompt)
            trajectory = Trajectory(
                prompt, list(ids), len(ids), [0] * len(ids), [0.0] * len(ids), [], [], ""
            )
            trajectories.append(trajectory)
            running.append(_Running(episode, trajectory, p * spec.n + s))
            _add_turn(trajectory, sample)
        result.append(trajectories)
    for turn in range(1, max_turns + 1):
        running = _answer(env, running, encode_observation, context_len, turn, max_turns)
        if not running:
            break
        turn_spec = dataclasses.replace(
            spec, n=1, first_index=spec.first_index + turn * TURN_SEED_STRIDE
        )
        running = _next_turn(engine, running, turn_spec, context_len)
    return result


def _add_turn(trajectory: Trajectory, sample: Sample) -> None:
    start = len(trajectory.ids)
    trajectory.ids.extend(sample.completion_ids)
    trajectory.loss_mask.extend([1] * len(sample.completion_ids))
    trajectory.logprobs.extend(sample.logprobs or [0.0] * len(sample.completion_ids))
    if sample.completion_ids and not sample.logprobs:
        trajectory.logprobs_reported = False
    trajectory.turn_finish.append(sample.finish_reason)
    trajectory.turns.append((start, len(trajectory.ids), sample.weight_version))
    trajectory.texts.append(sample.text)


def _answer(
    env: Environment,
    running: list[_Running],
    encode_observation: Callable[[str], list[int]],
    context_len: int,
    turns_done: int,
    max_turns: int,
) -> list[_Running]:
    """The environment's step on each episode's last turn; the episodes that go on."""
    going = []
    for item in running:
        trajectory = item.trajectory
        start, end, _ = trajectory.turns[-1]
        answer = env.step(item.episode, trajectory.texts[-1], tuple(trajectory.ids[start:end]))
        trajectory.info = item.episode.info
        if answer.done:
            trajectory.finish_reason = "done"
            continue
        observation = answer.observation or ()
        if isinstance(observation, str):
            observation = encode_observation(observation)
        room = context_len - len(trajectory.ids)
        observation = list(observation)[: max(room, 0)]  # never past the context
        trajectory.ids.extend(observation)
        trajectory.loss_mask.extend([0] * len(observation))
        trajectory.logprobs.extend([0.0] * len(observation))
        if turns_done >= max_turns:
            trajectory.finish_reason = "turns"
        elif len(trajectory.ids) >= context_len:
            trajectory.finish_reason = "length"  # no room for the observation or a turn
        else:
            going.append(item)
    return going


def _next_turn(
    engine: RolloutEngine, running: list[_Running], spec: SamplingSpec, context_len: int
) -> list[_Running]:
    """One generate call per distinct room left in the context (a turn may not pass it; in
    the common case, one call), each episode seeded by its own index."""
    by_room: dict[int, list[_Running]] = {}
    for item in running:
        room = min(spec.max_tokens, context_len - len(item.trajectory.ids))
        by_room.setdefault(room, []).append(item)
    for room, items in sorted(by_room.items()):
        call = dataclasses.replace(
            spec,
            max_tokens=room,
            request_indices=tuple(spec.first_index + item.index for item in items),
        )
        groups = engine.generate([list(item.trajectory.ids) for item in items], call)
        for item, group in zip(items, groups, strict=True):
            _add_turn(item.trajectory, group[0])
    return running
