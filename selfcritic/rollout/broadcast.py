"""The cross-node weight sync (`rollout.weight_sync=nccl`): an NCCL broadcast group of the
learner's rank 0 and every engine worker, and each sync through it.

- Group: world size 1 + the engines' workers (each engine's tensor-parallel size); rank 0 is the
  learner's rank 0, engine i's workers follow in engine order (`device_sync.broadcast_ranks`).
  Rank 0 listens on its node's IP at a port the OS assigns while binding; the learner's rank 0
  and the engines are asked to join at once and waited on together (each blocks until all
  have joined). Formed once at run start, after the pool and the learner exist.
- Sync: rank 0 sends the layouts of every bucket (metadata only) to the engines in one Ray call
  per engine, issued together with the learner ranks' broadcast loop; every rank gathers each
  whole tensor in plan order, rank 0 casts it to the engines' dtype, packs it into its bucket,
  and broadcasts bucket by bucket (`device_sync.send_buckets`: one bucket's buffers alive at a
  time on rank 0). The engines receive every bucket, then reload once.
- Restarts: an engine found dead (before a sync, or by a generate) is restarted and refilled
  through the object store (`RolloutPool.refill`, as for cuda_ipc: it must serve at the current
  weights before the next sync comes); since an NCCL communicator's members are fixed, the group
  is then re-formed with every engine before the next broadcast (the old communicators are
  dropped, not destroyed: vLLM's PyNcclCommunicator has no destroy).
Left out: an engine lost in the middle of a broadcast (rank 0 stays blocked in NCCL: no abort or
timeout is wired; the pool raises and the run stops), and pipelining (double-buffered buckets).
"""

from __future__ import annotations

from selfcritic.config import RolloutConfig
from selfcritic.rollout.device_sync import broadcast_ranks


class WeightBroadcast:
    """The broadcast group of a learner group and a rollout pool, and the sync through it."""

    def __init__(self, learner, pool, cfg: RolloutConfig) -> None:
        """`learner`: a LearnerGroup (selfcritic/learner/group.py); `pool`: a RolloutPool."""
        self.learner, self.pool, self.cfg = learner, pool, cfg
        self.formed_at: int | None = None  # the pool's restart count when the group was formed
        self.form()

    def form(self) -> None:
        """Rank 0 and every engine worker join a new group (both sides asked, then waited on
        together: each side blocks in the rendezvous until the other has arrived)."""
        import ray

        host, port = self.learner.open_weight_broadcast()
        world, firsts = broadcast_ranks(self.pool.engine_sizes())
        joining = [self.learner.join_weight_broadcast(world)]
        joining += self.pool.join_weight_broadcast(host, port, firsts, world)
        ray.get(joining)
        self.formed_at = self.pool.restarts

    def sync(self) -> int:
        """The learner's weights to every engine by broadcast; returns the new weight version."""
        self.pool.revive()  # a dead engine would leave rank 0 waiting in NCCL: restart it first
        if self.pool.restarts != self.formed_at:
            self.form()
        cfg = self.cfg
        return self.learner.broadcast_weight_sync(
            cfg.sync_bucket_mb, cfg.dtype, self.pool.load_broadcast
        )
