"""A pool of rollout engines, each inside a Ray actor.

- generate: prompts are split into contiguous shards, one per engine, and results come back in
  prompt order with exactly n samples each, or the call fails: never a partial batch.
- faults: an engine whose actor died, at any moment, is restarted and brought to the current
  weights before it serves again: one found dead by a weight sync is restarted by that sync;
  one that dies after it (between steps, in an evaluation) is found by the next generate. A
  shard whose generation failed is retried once (on the restarted engine if it died), and a
  second failure raises RolloutError naming the engine and the cause.
- weight sync: a checkpoint-named state is cut into buckets of `rollout.sync_bucket_mb`, each put
  once in Ray's object store as numpy arrays (shared memory on one node: engines on this node read
  them without a copy) by whoever holds the weights (`put_buckets`; in training, the learner's
  rank 0, so they never pass through the driver); every engine gathers the buckets and applies
  them in one in-place load (`load_buckets`). The buckets of the current version are kept for
  re-syncing a restarted engine. On GPUs (`rollout.weight_sync=cuda_ipc`) `load_handles` gives
  every engine CUDA IPC handles to the learner's packed device buffers instead (nothing kept: a
  restarted engine is refilled through `refill`, the object-store path). Across nodes
  (`rollout.weight_sync=nccl`) every engine joins an NCCL group with the learner's rank 0
  (`join_weight_broadcast`) and receives each sync from its broadcast (`load_broadcast`);
  nothing is kept either (selfcritic/rollout/broadcast.py re-forms the group after a restart).
- sleep: `sleep(level)` puts every engine that can to sleep (the learner has the GPUs), and
  `wake_up(tags)` wakes them (the weights before a sync, then the rest); an engine found dead
  on waking is restarted, awake and at the current weights.
- shutdown: engines stop their engine cores before their actors are killed (no /dev/shm leftovers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

from selfcritic.config import RolloutConfig
from selfcritic.rollout.types import Sample, SamplingSpec
from selfcritic.rollout.weights import put_buckets


class RolloutError(RuntimeError):
    """Generation failed twice on one engine: the step cannot have its full batch."""


class _EngineActor:
    """Hosts one engine in a Ray worker process."""

    def __init__(self, model_path: str, cfg: RolloutConfig, trust_remote_code: bool) -> None:
        import torch

        from selfcritic.cluster import normal_priority, pin_to_cores

        normal_priority()
        pin_to_cores(cfg.cpu_cores)
        # Before the engine starts: vLLM's CPU worker then forbids changing it in this process.
        torch.set_num_threads(cfg.threads_per_engine)
        from selfcritic.rollout.engines import ENGINES

        self.engine = ENGINES.get(cfg.engine)(Path(model_path), cfg, trust_remote_code)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        return self.engine.generate(prompts, spec)

    def update_weights(self, version: int, *buckets: dict) -> int:
        """Load the buckets (Ray resolves the object refs passed as arguments) as one state."""
        state = {name: array for bucket in buckets for name, array in bucket.items()}
        self.engine.update_weights(state, version)
        return version

    def update_weights_from_ipc(self, version: int, packed: list) -> int:
        """Load one sync from CUDA IPC handles to the learner's buffers (GPU engines)."""
        self.engine.update_weights_from_ipc(packed, version)
        return version

    def init_weight_broadcast(self, host: str, port: int, first_rank: int, world: int) -> None:
        """Join the learner rank 0's NCCL weight group (rollout.weight_sync=nccl)."""
        self.engine.init_weight_broadcast(host, port, first_rank, world)

    def update_weights_from_broadcast(self, version: int, layouts: list) -> int:
        """Receive one sync broadcast by the learner's rank 0 (it sends meanwhile)."""
        self.engine.update_weights_from_broadcast(layouts, version)
        return version

    def sleep(self, level: int) -> bool:
        """Put the engine to sleep where it can (engines without `sleep` never do)."""
        if not hasattr(self.engine, "sleep"):
            return False
        self.engine.sleep(level)
        return True

    def wake_up(self, tags: tuple[str, ...] | None) -> None:
        if hasattr(self.engine, "wake_up"):
            self.engine.wake_up(tags)

    def weight_version(self) -> int:
        return self.engine.weight_version

    def pid(self) -> int:
        return os.getpid()

    def threads(self) -> int:
        """torch intra-op threads of this engine's process."""
        import torch

        return torch.get_num_threads()

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

    def __init__(
        self,
        model_path: Path,
        cfg: RolloutConfig,
        trust_remote_code: bool = False,
        placement_group=None,
    ) -> None:
        """`placement_group`: the learner's GPU bundles, engine i placed in bundle i modulo
        their number (`rollout.placement=colocate` on GPUs: selfcritic/cluster.py); None: where
        Ray finds room."""
        import ray

        self.model_path, self.cfg = str(model_path), cfg
        self.trust_remote_code = trust_remote_code
        self.placement_group = placement_group
        self._actor_cls = ray.remote(
            num_cpus=cfg.cpus_per_engine, num_gpus=cfg.gpus_per_engine, max_restarts=0
        )(_EngineActor)
        self.actors = [self._start_actor(index) for index in range(cfg.num_engines)]
        ray.get([actor.__ray_ready__.remote() for actor in self.actors])
        self.weight_version = 0
        self._bucket_refs: list = []  # the current version's buckets, for re-syncing
        # where a restarted engine gets the current weights when no buckets are kept (a device
        # sync): a callable returning object-store bucket refs (the trainer's learner)
        self.refill = None
        self.restarts = 0

    def _start_actor(self, index: int):
        from selfcritic.cluster import in_bundle

        options = in_bundle(self.placement_group, index)
        return self._actor_cls.options(**options).remote(
            self.model_path, self.cfg, self.trust_remote_code
        )

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        import ray

        shards = split_evenly(prompts, len(self.actors))
        starts = [sum(len(s) for s in shards[:i]) for i in range(len(shards))]
        specs = [
            dataclasses.replace(
                spec,
                first_index=spec.first_index + x,
                request_indices=spec.request_indices[x : x + len(s)]
                if spec.request_indices
                else (),
            )
            for x, s in zip(starts, shards, strict=True)
        ]
        futures = {
            i: self.actors[i].generate.remote(s, specs[i]) for i, s in enumerate(shards) if s
        }
        groups: list[list[Sample]] = []
        for index, future in futures.items():
            try:
                groups.extend(ray.get(future))
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as first:
                groups.extend(self._retry(index, shards[index], specs[index], first))
        if len(groups) != len(prompts) or any(len(group) != spec.n for group in groups):
            raise RolloutError("the engines returned a partial batch")
        return groups

    def _retry(self, index: int, shard, spec: SamplingSpec, first: Exception):
        """Second and last attempt for one shard, on a restarted engine if the actor died."""
        import ray

        if isinstance(first, ray.exceptions.RayActorError):
            self.restart(index)
        try:
            return ray.get(self.actors[index].generate.remote(shard, spec))
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as second:
            raise RolloutError(
                f"engine {index} failed to generate twice ({type(first).__name__}, then "
                f"{type(second).__name__}: {second}); the step has no complete batch"
            ) from second

    def restart(self, index: int) -> None:
        """Replace engine `index` and bring it to the current weights before it serves."""
        import ray

        ray.kill(self.actors[index], no_restart=True)
        actor = self._start_actor(index)
        ray.get(actor.__ray_ready__.remote())
        if not self._bucket_refs and self.weight_version and self.refill is not None:
            self._bucket_refs = list(self.refill())
        if self._bucket_refs:
            ray.get(actor.update_weights.remote(self.weight_version, *self._bucket_refs))
        self.actors[index] = actor
        self.restarts += 1

    def _restart_the_dead(self, futures: list) -> None:
        """Wait for one call per engine (in engine order); an engine that died before or during
        its call is restarted, at the current weights (the buckets kept, or `refill`)."""
        import ray

        for index, future in enumerate(futures):
            try:
                ray.get(future)
            except ray.exceptions.RayActorError:
                self.restart(index)

    def update_weights(self, state: dict) -> int:
        """Load a checkpoint-named state into every engine; returns the new weight version."""
        return self.load_buckets(put_buckets(state, self.cfg.sync_bucket_mb))

    def load_buckets(self, bucket_refs: list, version: int | None = None) -> int:
        """Load weights already in the object store (refs from `put_buckets`, whoever put
        them) into every engine; returns the new weight version (`version` when given: a
        resumed run restores its count)."""

        self._bucket_refs = list(bucket_refs)
        self.weight_version = self.weight_version + 1 if version is None else version
        futures = [
            actor.update_weights.remote(self.weight_version, *self._bucket_refs)
            for actor in self.actors
        ]
        self._restart_the_dead(futures)
        return self.weight_version

    def load_handles(self, packed: list) -> int:
        """Load one sync from [(CUDA IPC handle, Layout)] (the learner's packed device buffers,
        which it frees after this returns) into every engine; returns the new weight version."""

        self._bucket_refs = []  # nothing in the object store: a restart calls `refill`
        self.weight_version += 1
        futures = [
            actor.update_weights_from_ipc.remote(self.weight_version, packed)
            for actor in self.actors
        ]
        self._restart_the_dead(futures)
        return self.weight_version

    def engine_sizes(self) -> list[int]:
        """Each engine's number of workers (GPUs): its members in a weight broadcast group."""
        return [self.cfg.tensor_parallel_size] * len(self.actors)

    def join_weight_broadcast(self, host: str, port: int, firsts: list[int], world: int) -> list:
        """Every engine starts joining the broadcast group at host:port (engine i's workers as
        ranks firsts[i]...); the refs, for the caller to wait on together with rank 0's join."""
        return [
            actor.init_weight_broadcast.remote(host, port, first, world)
            for actor, first in zip(self.actors, firsts, strict=True)
        ]

    def load_broadcast(self, layouts: list, sending: list) -> int:
        """Every engine receives one sync of these layouts (every bucket's, in order) from the
        broadcast that `sending` (the learner ranks' refs) performs, waited on together; nothing
        is kept in the object store (a restart calls `refill`). Returns the new weight version.
        A failure on either side raises at once: an engine lost mid-broadcast leaves the
        learner's rank 0 blocked in NCCL (no abort is wired), so the run must stop."""
        import ray

        self._bucket_refs = []
        self.weight_version += 1
        receiving = [
            actor.update_weights_from_broadcast.remote(self.weight_version, layouts)
            for actor in self.actors
        ]
        pending = list(sending) + receiving
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # raises the first failure without waiting for the rest
        return self.weight_version

    def revive(self) -> None:
        """Restart (at the current weights) every engine found dead."""

        futures = [actor.weight_version.remote() for actor in self.actors]
        self._restart_the_dead(futures)

    def sleep(self, level: int) -> None:
        """Every engine that can sleeps at `level` (1: KV cache freed, weights offloaded; 2:
        both freed). One found dead is left to the next wake-up, sync or generate."""
        import ray

        futures = [actor.sleep.remote(level) for actor in self.actors]
        for future in futures:
            with contextlib.suppress(ray.exceptions.RayActorError):
                ray.get(future)

    def wake_up(self, tags: tuple[str, ...] | None = None) -> None:
        """Wake every engine: `("weights",)` before a sync loads into them, then None (all);
        one found dead is restarted (awake, at the current weights)."""

        futures = [actor.wake_up.remote(tags) for actor in self.actors]
        self._restart_the_dead(futures)

    def engine_pids(self) -> list[int]:
        import ray

        return ray.get([actor.pid.remote() for actor in self.actors])

    def engine_versions(self) -> list[int]:
        import ray

        return ray.get([actor.weight_version.remote() for actor in self.actors])

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            # an engine already dead has nothing left to stop
            with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.get(actor.shutdown.remote(), timeout=60)
            ray.kill(actor, no_restart=True)
        self.actors = []
        self._bucket_refs = []
