"""A pool of rollout engines, each inside a Ray actor.

Prompts are split into contiguous shards, one per engine, and results come back in prompt
order with exactly n samples each. Weights are put in Ray's object store once and loaded by every
engine. Left out: restarting dead engines, retries and bucketed transfer (the rollout issue).
"""

from __future__ import annotations

from pathlib import Path

from selfcritic.config import RolloutConfig
from selfcritic.rollout.types import Sample, SamplingSpec


class _EngineActor:
    """Hosts one engine in a Ray worker process."""

    def __init__(self, model_path: str, cfg: RolloutConfig) -> None:
        from selfcritic.rollout.vllm_engine import VLLMEngine

        self.engine = VLLMEngine(Path(model_path), cfg)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        return self.engine.generate(prompts, spec)

    def update_weights(self, payload: bytes, version: int) -> None:
        self.engine.update_weights(payload, version)

    def shutdown(self) -> None:
        self.engine.shutdown()


def split_evenly(items: list, parts: int) -> list[list]:
    """Contiguous shards whose sizes differ by at most one (empty shards allowed)."""
    size, extra = divmod(len(items), parts)
    shards, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        shards.append(items[start:end])
        start = end
    return shards


class RolloutPool:
    """N engine actors behind one generate/update_weights interface."""

    def __init__(self, model_path: Path, cfg: RolloutConfig) -> None:
        import ray

        actor_cls = ray.remote(
            num_cpus=cfg.cpus_per_engine, num_gpus=cfg.gpus_per_engine, max_concurrency=1
        )(_EngineActor)
        self.actors = [actor_cls.remote(str(model_path), cfg) for _ in range(cfg.num_engines)]
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])
        self.weight_version = 0

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        import ray

        shards = split_evenly(prompts, len(self.actors))
        futures = [
            actor.generate.remote(shard, spec)
            for actor, shard in zip(self.actors, shards, strict=True)
            if shard
        ]
        groups = [group for result in ray.get(futures) for group in result]
        if len(groups) != len(prompts) or any(len(group) != spec.n for group in groups):
            raise RuntimeError("rollout pool returned a partial batch")
        return groups

    def update_weights(self, payload: bytes) -> int:
        """Load new weights into every engine; returns the new weight version."""
        import ray

        self.weight_version += 1
        ref = ray.put(payload)
        ray.get([actor.update_weights.remote(ref, self.weight_version) for actor in self.actors])
        return self.weight_version

    def shutdown(self) -> None:
        import ray

        ray.get([actor.shutdown.remote() for actor in self.actors])
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
