"""Partial rollouts (`rollout.partial_tokens`): a response cut by its step's token budget is
continued in the next step under the new weights, as a segment of its own.

The real transformers engine on the nano model samples 2 responses of up to 8 tokens, 3 a step,
its weights changed between steps; every segment's logprobs must be those of the weights that
sampled it (recomputed here by a forward of each version's model), the segments must tile the
response, and the group is done only when every response has ended. The trainer's use is run
once on the quick nano run: groups pause, resume and are trained on, and a multi-turn
environment or a budget at or above `sampling.max_tokens` is refused before any work.
"""

from __future__ import annotations

import copy

import pytest
import torch

from selfcritic.config import ConfigError, RolloutConfig
from selfcritic.envs.base import Prompt, SingleTurn
from selfcritic.model.build import load_model
from selfcritic.rollout.episodes import run_episodes
from selfcritic.rollout.hf_engine import TransformersEngine
from selfcritic.rollout.partial import check_single_turn, continue_paused, split_finished
from selfcritic.rollout.types import SamplingSpec

BUDGET, MAX_TOKENS, CONTEXT = 3, 8, 64


class Answers(SingleTurn):
    name = "answers"


def _new_weights(engine: TransformersEngine, version: int) -> dict:
    """Move the engine's weights (as a learner step would) and return a copy of them."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(version)
        for parameter in engine.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    engine.weight_version = version
    return copy.deepcopy(engine.model.state_dict())


def _logprobs_under(nano_model_path, weights: dict, ids: list[int], start: int, end: int):
    model = load_model(nano_model_path).eval()
    model.load_state_dict(weights)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids[:end]])).logits[0].float()
    steps = torch.log_softmax(logits, -1)
    return [float(steps[t - 1, ids[t]]) for t in range(start, end)]


def test_paused_responses_continue_under_each_steps_weights(nano_model_path):
    engine = TransformersEngine(nano_model_path, RolloutConfig(engine="transformers"))
    tokenizer = engine.tokenizer
    prompt = Prompt(text="3+4=", reference="7")
    ids = [tokenizer.bos_token_id, *tokenizer(prompt.text, add_special_tokens=False).input_ids]
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=MAX_TOKENS, seed=0, logprobs=True)
    weights = {0: copy.deepcopy(engine.model.state_dict())}
    first = SamplingSpec(n=2, temperature=1.0, max_tokens=BUDGET, seed=0, logprobs=True)
    groups = run_episodes(engine, Answers(), [prompt], [ids], first, None, CONTEXT)
    done_prompts, done, paused = split_finished([prompt], groups, MAX_TOKENS, CONTEXT)
    assert not done and len(paused) == 1  # 3 tokens in, 8 allowed: still running
    for version in (1, 2):
        weights[version] = _new_weights(engine, version)
        continue_paused(engine, paused, spec, BUDGET, CONTEXT)
        done_prompts, done, paused = split_finished(
            [g.prompt for g in paused], [g.trajectories for g in paused], MAX_TOKENS, CONTEXT
        )
    assert not paused and done_prompts == [prompt]  # 3 + 3 + 2 tokens: every response ended
    for trajectory in done[0]:
        written = len(trajectory.completion_ids)
        assert written == MAX_TOKENS or trajectory.engine_finish == "stop"
        pieces = trajectory.segments
        assert [end - start for start, end, _ in pieces] == [3, 3, 2][: len(pieces)]
        assert pieces[0][0] == len(ids) and pieces[-1][1] == len(trajectory.ids)
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # tiled
        assert [version for _, _, version in pieces] == [0, 1, 2][: len(pieces)]
        assert trajectory.turns == [(len(ids), len(trajectory.ids), 0)]  # one turn, all pieces
        assert trajectory.text == tokenizer.decode(trajectory.completion_ids)
        for start, end, version in pieces:
            expected = _logprobs_under(
                nano_model_path, weights[version], trajectory.ids, start, end
            )
            assert trajectory.logprobs[start:end] == pytest.approx(expected, abs=1e-4)


def test_partial_rollouts_in_the_loop(tmp_path, cache_dir):
    """Three steps of the quick nano run (8 prompts x 4 samples), each response 3 tokens a step
    of up to 8 (the random model seldom ends sooner): every group pauses at step 1 and no step
    trains on anything partial; step 2 continues all 8 (no slot left for a new prompt) and
    checkpoints them, most with two segments; step 3 ends them and trains on them."""
    import pickle

    from test_async_rollout import _train

    from selfcritic.trainer import PAUSED_FILE

    records = _train(
        tmp_path, cache_dir, "rollout.max_staleness=0", f"rollout.partial_tokens={BUDGET}"
    )
    paused = [r["rollout/paused_groups"] for r in records]
    resumed = [r["rollout/resumed_groups"] for r in records]
    assert paused == [8.0, 8.0, 0.0] and resumed == [0.0, 8.0, 8.0]
    assert [r["rollout/kept_groups"] for r in records] == [0.0, 0.0, 8.0]
    assert "learner/loss" not in records[0] and "learner/loss" in records[2]
    assert 2 * BUDGET < records[2]["rollout/response_length"] <= MAX_TOKENS
    saved = tmp_path / "checkpoints" / "step-000002" / PAUSED_FILE
    groups = pickle.loads(saved.read_bytes())
    assert len(groups) == 8 and all(len(g.trajectories) == 4 for g in groups)
    trajectories = [t for g in groups for t in g.trajectories]
    for trajectory in trajectories:  # one piece a step, each within the budget, tiling it
        lengths = [end - start for start, end, _ in trajectory.pieces]
        assert len(lengths) <= 2 and max(lengths) <= BUDGET
        assert sum(lengths) == len(trajectory.completion_ids)
    assert sum(len(t.segments) == 2 for t in trajectories) > len(trajectories) // 2


def test_a_multi_turn_environment_is_refused():
    class MultiTurn:
        name, max_turns = "tools", 4

    check_single_turn(Answers(), BUDGET)  # single-turn: fine
    check_single_turn(MultiTurn(), None)  # off: anything goes
    with pytest.raises(ConfigError, match="rollout.partial_tokens.*takes up to 4 turns"):
        check_single_turn(MultiTurn(), BUDGET)
