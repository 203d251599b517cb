"""Engines asleep while the learner steps: the transformers engine's real sleep (its memory freed,
its greedy generations the same after the wake-up, also across weight updates), and the pool's
sleep and wake-up around a sync (selfcritic/rollout/hf_engine.py, pool.py)."""

from __future__ import annotations

import pytest
import torch

from selfcritic.config import RolloutConfig
from selfcritic.rollout.hf_engine import TransformersEngine
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import to_checkpoint_names

GREEDY = SamplingSpec(n=1, temperature=0.0, max_tokens=8)
PROMPTS = [[1, 5, 7, 9], [1, 11, 12]]


def _tokens(engine) -> list:
    return [s.completion_ids for group in engine.generate(PROMPTS, GREEDY) for s in group]


def _trained(engine, scale: float, seed: int) -> dict:
    """The engine's checkpoint weights moved by a fixed pattern (checkpoint names)."""
    generator = torch.Generator().manual_seed(seed)
    state = to_checkpoint_names(engine.model.state_dict())
    return {
        name: t + scale * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
        for name, t in state.items()
    }


@pytest.fixture(scope="module")
def engines(nano_model_path):
    """An engine to put to sleep, one that stays awake, and two trained states."""
    cfg = RolloutConfig(engine="transformers")
    engine, awake = (
        TransformersEngine(nano_model_path, cfg),
        TransformersEngine(nano_model_path, cfg),
    )
    return engine, awake, _trained(engine, 0.05, 0), _trained(engine, 0.05, 1)


@pytest.mark.parametrize("level", [1, 2])
def test_sleep_frees_the_weights_and_the_wake_up_restores_generation(engines, level):
    engine, _, trained, _ = engines
    engine.update_weights(trained, version=3)
    before = _tokens(engine)
    engine.sleep(level)
    assert engine.asleep == level
    assert all(p.is_meta for p in engine.model.parameters())  # the memory is released
    assert all(b.is_meta for b in engine.model.buffers())
    engine.wake_up(tags=("weights",))
    assert not any(p.is_meta for p in engine.model.parameters())
    if level == 2:  # nothing kept: the checkpoint's weights until the sync that follows
        assert engine.weight_version == 0
        engine.update_weights(trained, version=3)
    assert engine.weight_version == 3
    assert _tokens(engine) == before


@pytest.mark.parametrize("level", [1, 2])
def test_a_sync_while_asleep_is_applied_at_the_wake_up(engines, level):
    engine, awake, first, second = engines
    engine.update_weights(first, version=4)
    awake.update_weights(second, version=5)
    engine.sleep(level)
    engine.update_weights(second, version=5)  # asleep: kept for the wake-up
    engine.wake_up()
    assert engine.weight_version == 5
    assert _tokens(engine) == _tokens(awake)
    assert _tokens(engine) != _tokens_of(first, engine)  # the update changed generation
    engine.wake_up()  # awake already: nothing happens
    engine.sleep(0)  # level 0: never asleep
    assert engine.asleep == 0


def _tokens_of(state, engine) -> list:
    """Greedy tokens under `state`, leaving the engine under its current weights."""
    current = to_checkpoint_names({k: v.clone() for k, v in engine.model.state_dict().items()})
    engine.update_weights(state, engine.weight_version)
    tokens = _tokens(engine)
    engine.update_weights(current, engine.weight_version)
    return tokens
