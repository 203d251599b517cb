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
to the room left. The history is never re-tokenized: each turn and observation appends ids, so
the learner sees exactly the ids the engine conditioned on. `Observing` says how observations
join: `close_turn`, the end-of-turn ids a chat template expects after a model turn, are
appended (mask 0) where the turn did not end with one (cut by its token budget);
`max_tokens` bounds each observation's own tokens (a longer text loses its middle,
`fit_observation`, counted in `Trajectory.observation_cuts`; the framing is kept); `parallel`
environment steps run at once in threads (tool calls wait on I/O). At the end, whatever ended
them, an environment's `close_episode(episode)` (where it has one) frees each episode's
resources. The records are
`Trajectory`s (selfcritic/envs/base.py). Left out: overlapping turns of different episodes
(asynchronous rollout); tool execution is the environment's `step`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from selfcritic.envs.base import Environment, Episode, Prompt, Trajectory
from selfcritic.rollout.types import RolloutEngine, Sample, SamplingSpec

OBSERVATION_CUT = " [cut] "  # where an observation over its budget lost its middle
TURN_SEED_STRIDE = 100_000_000  # request indices of turn t > 0 start at t * this (draws: 1e6)


@dataclasses.dataclass(frozen=True)
class Observing:
    """How observations join an episode (module docstring)."""

    close_turn: tuple[int, ...] = ()  # end-of-turn ids: the first closes a cut turn
    max_tokens: int | None = None  # an observation's ids at most (None: the context's room)
    parallel: int = 1  # environment steps run at once


@dataclasses.dataclass
class _Running:
    """An episode between turns: its environment state and the trajectory so far."""

    episode: Episode
    trajectory: Trajectory
    index: int  # prompt index x n + sample index: its request seed in later turns


def observing_for(env, encode) -> Observing:
    """How `env`'s observations join its episodes, for the prompt encoder `encode` (a
    `PromptEncoder`): a chat template's end of turn closes a cut turn; the environment's
    `max_observation_tokens` and `parallel_steps` where it has them."""
    return Observing(
        close_turn=encode.turn_stop_ids(),
        max_tokens=getattr(env, "max_observation_tokens", None),
        parallel=getattr(env, "parallel_steps", 1),
    )


def run_episodes(
    engine: RolloutEngine,
    env: Environment,
    prompts: list[Prompt],
    prompt_ids: list[list[int]],
    spec: SamplingSpec,
    encode_observation: Callable[[str], list[int]],
    context_len: int,
    max_turns: int = 1,
    observing: Observing = Observing(),
) -> list[list[Trajectory]]:
    """`spec.n` trajectories for each prompt (`prompt_ids` its tokens), in prompt order."""
    groups = engine.generate(prompt_ids, spec)
    running: list[_Running] = []
    result: list[list[Trajectory]] = []
    try:
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
        going = running
        for turn in range(1, max_turns + 1):
            going = _answer(env, going, encode_observation, context_len, turn, max_turns, observing)
            if not going:
                break
            turn_spec = dataclasses.replace(
                spec, n=1, first_index=spec.first_index + turn * TURN_SEED_STRIDE
            )
            going = _next_turn(engine, going, turn_spec, context_len)
    finally:  # an environment that holds resources per episode (tool sessions) frees them
        _close_episodes(env, [item.episode for item in running])
    return result


def _close_episodes(env, episodes) -> None:
    """The environment frees the episodes' resources: all at once (`close_episodes`) where it
    can, else `close_episode` on each, every one tried even when one fails."""
    if hasattr(env, "close_episodes"):
        env.close_episodes(episodes)
        return
    close = getattr(env, "close_episode", None)
    failures = []
    for episode in episodes if close else ():
        try:
            close(episode)
        except Exception as error:  # noqa: BLE001 (the others must still be freed)
            failures.append(error)
    if failures:
        raise failures[0]


def append_tokens(trajectory: Trajectory, sample: Sample) -> int:
    """Append what the model wrote in `sample` (learned: loss mask 1, its logprobs); the
    start of the appended tokens."""
    start = len(trajectory.ids)
    trajectory.ids.extend(sample.completion_ids)
    trajectory.loss_mask.extend([1] * len(sample.completion_ids))
    trajectory.logprobs.extend(sample.logprobs or [0.0] * len(sample.completion_ids))
    if sample.completion_ids and not sample.logprobs:
        trajectory.logprobs_reported = False
    return start


def _add_turn(trajectory: Trajectory, sample: Sample) -> None:
    start = append_tokens(trajectory, sample)
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
    observing: Observing,
) -> list[_Running]:
    """The environment's step on each episode's last turn; the episodes that go on."""

    def step(item: _Running):
        start, end, _ = item.trajectory.turns[-1]
        turn = item.trajectory.texts[-1]
        return env.step(item.episode, turn, tuple(item.trajectory.ids[start:end]))

    if observing.parallel > 1 and len(running) > 1:
        with ThreadPoolExecutor(min(observing.parallel, len(running))) as threads:
            answers = list(threads.map(step, running))
    else:
        answers = [step(item) for item in running]
    going = []
    for item, answer in zip(running, answers, strict=True):
        trajectory = item.trajectory
        trajectory.info = item.episode.info
        if answer.done:
            trajectory.finish_reason = "done"
            continue
        _observe(trajectory, answer.observation, encode_observation, context_len, observing)
        if turns_done >= max_turns:
            trajectory.finish_reason = "turns"
        elif len(trajectory.ids) >= context_len:
            trajectory.finish_reason = "length"  # no room for the observation or a turn
        else:
            going.append(item)
    return going


def _observe(trajectory, observation, encode_observation, context_len, observing) -> None:
    """Append an observation (text or ids), after closing a cut turn, within the budgets."""
    text = observation if isinstance(observation, str) else None
    if text is not None:
        ids, text, cut = fit_observation(text, encode_observation, observing.max_tokens)
    else:
        ids = list(observation or ())
        cut = observing.max_tokens is not None and len(ids) > observing.max_tokens
        ids = ids[: observing.max_tokens] if cut else ids
    trajectory.observation_cuts += cut
    close = observing.close_turn
    if close and trajectory.ids[-1] not in close:
        ids = [close[0], *ids]  # the turn was cut: the template's end of turn closes it
    room = context_len - len(trajectory.ids)
    ids = ids[: max(room, 0)]  # never past the context
    trajectory.ids.extend(ids)
    trajectory.loss_mask.extend([0] * len(ids))
    trajectory.logprobs.extend([0.0] * len(ids))
    trajectory.observations.append(text if text is not None else "")


def fit_observation(text: str, encode_observation, max_tokens: int | None):
    """(ids, text, cut) of an observation whose own tokens (beyond what the template writes
    around an empty one) are at most `max_tokens`: a longer text loses its middle, marked
    OBSERVATION_CUT (a binary search over the characters kept, half from each end, so the
    template's framing and an environment's own wrapper, "<result>...</result>", stay whole)."""
    ids = list(encode_observation(text))
    if max_tokens is None:
        return ids, text, False
    room = len(encode_observation("")) + max_tokens
    if len(ids) <= room:
        return ids, text, False
    best, low, high = None, 0, len(text)
    while low <= high:
        kept = (low + high) // 2
        head = (kept + 1) // 2
        candidate = text[:head] + OBSERVATION_CUT + text[len(text) - (kept - head) :]
        found = list(encode_observation(candidate))
        if len(found) <= room:
            best, low = (found, candidate), kept + 1
        else:
            high = kept - 1
    if best is None:  # not even the mark fits: the framing alone
        return list(encode_observation(""))[:room], "", True
    return best[0], best[1], True


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
