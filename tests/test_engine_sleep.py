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


def test_a_pool_of_transformers_engines_sleeps_and_wakes_around_a_sync(nano_model_path, engines):
    import ray

    from selfcritic.cluster import start_ray
    from selfcritic.config import RayConfig
    from selfcritic.rollout.pool import RolloutPool

    _, awake, _, trained = engines
    awake.update_weights(trained, version=1)
    start_ray(RayConfig(num_cpus=2))
    pool = RolloutPool(nano_model_path, RolloutConfig(engine="transformers", sleep_level=2))
    try:
        pool.sleep(2)
        pool.wake_up(("weights",))  # what the trainer does after the learner's step
        assert pool.update_weights(trained) == 1
        pool.wake_up()
        assert _tokens(pool) == _tokens(awake)
        pool.sleep(1)
        pool.wake_up()
        assert _tokens(pool) == _tokens(awake)
    finally:
        pool.shutdown()
        ray.shutdown()


class _Recorder:
    """A pool and a learner that write down what the trainer asks of them, in order."""

    def __init__(self) -> None:
        self.calls: list = []
        self.weight_version = 0

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.mark.parametrize("sleep_level", [0, 2])
def test_the_trainer_sleeps_the_engines_through_the_learners_step(sleep_level):
    from selfcritic.config import Config
    from selfcritic.trainer import Trainer

    cfg = Config()
    cfg.rollout.sleep_level = sleep_level
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.judge_weights = cfg, None
    trainer.pool = trainer.learner = recorder = _Recorder()
    recorder.weight_buckets = lambda mb: (recorder.calls.append(("weight_buckets",)), ["ref"])[1]
    metrics: dict = {}
    with trainer._engines_asleep(batch=object(), metrics=metrics):
        recorder.calls.append(("learner step",))
    trainer._sync(metrics)
    names = [call[0] for call in recorder.calls]
    if sleep_level == 0:
        assert names == ["learner step", "weight_buckets", "load_buckets"]
        return
    assert recorder.calls == [
        ("sleep", 2),
        ("learner step",),
        ("wake_up", ("weights",)),  # the weights first, for the sync to load into
        ("weight_buckets",),
        ("load_buckets", ["ref"]),
        ("wake_up",),  # then the KV cache
    ]
    with trainer._engines_asleep(batch=None, metrics=metrics):  # no step: no sleep
        pass
    assert recorder.calls[-1] == ("wake_up",)


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({"sleep_level": 1, "max_staleness": 1}, "rollout.sleep_level", "rollout.max_staleness=0"),
        ({"sleep_level": 2, "placement": "separate"}, "rollout.sleep_level", "placement=colocate"),
        ({"weight_sync": "cuda_ipc"}, "rollout.weight_sync", "gpus_per_engine=0"),
        ({"weight_sync": "nccl"}, "rollout.weight_sync", "gpus_per_engine=0"),
        (
            {"weight_sync": "nccl", "gpus_per_engine": 1.0, "placement": "separate"},
            "rollout.weight_sync",
            "learner.gpus_per_rank=0",
        ),
        (
            {"weight_sync": "nccl", "gpus_per_engine": 0.5},
            "rollout.weight_sync",
            "or rollout.placement=separate",
        ),
        (
            {"weight_sync": "cuda_ipc", "gpus_per_engine": 0.5, "placement": "separate"},
            "rollout.weight_sync",
            "set rollout.placement=colocate",
        ),
        ({"sleep_level": 3}, "rollout.sleep_level", "must be >= 0 and <= 2"),
        ({"weight_sync": "shm"}, "rollout.weight_sync", "must be one of auto"),
    ],
)
def test_the_preflight_refuses_what_cannot_work_naming_the_key(settings, key, message):
    from selfcritic.config import Config, ConfigError
    from selfcritic.preflight import validate

    cfg = Config()
    for name, value in settings.items():
        setattr(cfg.rollout, name, value)
    with pytest.raises(ConfigError, match=key) as refused:
        validate(cfg)
    assert message in str(refused.value)


def test_nccl_is_allowed_for_engines_on_gpus_of_their_own_beside_a_gpu_learner():
    from selfcritic.config import Config
    from selfcritic.preflight import validate

    cfg = Config()
    cfg.rollout.weight_sync, cfg.rollout.placement = "nccl", "separate"
    cfg.rollout.gpus_per_engine, cfg.learner.gpus_per_rank = 1.0, 1.0
    problems = []
    try:
        validate(cfg)
    except Exception as refused:  # noqa: BLE001 - other rules may refuse this machine
        problems = [line for line in str(refused).splitlines() if "weight_sync" in line]
    assert problems == []


def test_the_weight_sync_backend_follows_the_placement():
    from selfcritic.rollout.placement import weight_sync_backend

    assert weight_sync_backend(RolloutConfig()) == "object_store"  # CPU engines
    assert weight_sync_backend(RolloutConfig(gpus_per_engine=0.4)) == "cuda_ipc"
    separate = RolloutConfig(gpus_per_engine=1.0, placement="separate")
    assert weight_sync_backend(separate) == "object_store"
    assert weight_sync_backend(RolloutConfig(weight_sync="object_store", gpus_per_engine=1)) == (
        "object_store"
    )
