"""The data-parallel learner group: `learner.world_size` Ray actors, one FSDP2 shard each.

- Start: rank 0 opens a rendezvous store on its node's IP (the OS assigns the port as it
  binds); every rank joins one torch.distributed group through it (gloo on CPU, NCCL with
  GPUs), loads the checkpoint and shards it with FSDP2 (each decoder layer, then the root) at
  every world size, 1 included.
- Step: the driver cuts the batch into contiguous per-rank slices of its policy sequences,
  critic examples and PTX sequences, and sends each rank its slice with the WHOLE batch's
  normalisers (`BatchTotals`) and the number of micro-batches per phase of the busiest rank
  (`phase_passes`). FSDP2 SUMS the gradients over ranks (not its default average): each rank's
  losses are already divided by whole-batch totals, so K ranks give the update one learner
  gives on the whole batch. MuonClip then steps identically everywhere: Muon orthogonalises
  whole matrices, max attention logits are all-reduced with MAX and router loads with SUM.
- Metrics: losses and token-weighted means are summed over ranks (each rank's share is already
  weighted by its fraction of the whole batch; `logprob_diff_mean`'s by its fraction of the
  batch's reported tokens), `logprob_diff_max` is the max over ranks, the
  rest (grad norm, MuonClip, router balance: identical on every rank) come from rank 0; plus
  `tokens_per_second`, every real token the step read (policy, critic and PTX sequences) over
  the step's wall time.
- Weights: `checkpoint_state` gathers the full weights (a collective on every rank) and rank 0
  returns them under checkpoint names; `save_checkpoint` writes a Hugging Face checkpoint from
  rank 0.
- State: `save_state` / `load_state` write and read the model and both inner optimizers' state
  with torch.distributed.checkpoint (each rank its shards; reloadable at another world size).
- Devices: with `learner.gpus_per_rank` > 0 each rank gets a GPU of its own through one Ray
  placement group (a bundle per rank), loads its shards from the meta device onto it
  (selfcritic/learner/device.py) and computes in `learner.compute_dtype` (bfloat16 by default
  there) over float32 master weights; the group's collectives then run on NCCL.
Left out: expert parallelism, hybrid sharding across nodes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from selfcritic.config import LearnerConfig, OptimConfig
from selfcritic.learner.distributed import BatchTotals, split_batch
from selfcritic.learner.learner import PolicyBatch, learn_planned
from selfcritic.learner.sharded import PHASES, phase_passes

_SUMMED = (
    "loss",
    "kl",
    "clip_fraction",
    "ratio_mean",
    "entropy",
    "tis_weight_mean",
    "tis_clipped_fraction",
    "logprob_diff_mean",  # each rank's sum over its reported tokens / the batch's reported tokens
    "calibration_loss",
    "ptx_loss",
    "micro_batches",
)
_MAXED = ("logprob_diff_max",)


class _LearnerRank:
    """One rank, inside a Ray worker process."""

    def __init__(self, threads: int, cores: list[int]) -> None:
        from selfcritic.cluster import normal_priority, pin_to_cores

        normal_priority()
        pin_to_cores(cores)
        torch.set_num_threads(threads)
        self.learner = None
        self.store = None  # rank 0's rendezvous store, open from `open_rendezvous` on

    def open_rendezvous(self, world_size: int) -> tuple[str, int]:
        """Rank 0 only: open the rendezvous store; its (host, port) for every rank."""
        from selfcritic.learner.distributed import node_ip, open_store

        host = node_ip()
        self.store = open_store(host, world_size)
        return host, self.store.port

    def setup(
        self,
        rank: int,
        world_size: int,
        host: str,
        port: int,
        model_path: str,
        cfg: LearnerConfig,
        optim_cfg: OptimConfig,
        trust_engine: bool,
        trust_remote_code: bool,
    ) -> int:
        from selfcritic.learner.device import rank_device
        from selfcritic.learner.distributed import init_process_group
        from selfcritic.learner.sharded import ShardedLearner

        device = rank_device(cfg.device).type
        init_process_group(rank, world_size, host, port, self.store, device)
        self.rank = rank
        self.learner = ShardedLearner(
            Path(model_path), cfg, optim_cfg, trust_engine, trust_remote_code
        )
        return os.getpid()

    def step(self, batch: PolicyBatch, totals: BatchTotals, passes: dict[str, int]) -> dict:
        return self.learner.step_slice(batch, totals, passes)

    def own_logprobs(self, batch: PolicyBatch, passes: int) -> list[tuple[float, ...]]:
        return self.learner.own_logprobs_slice(batch, passes)

    def checkpoint_state(self) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from selfcritic.rollout.weights import to_checkpoint_names

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.learner.model, options=options)  # every rank gathers
        return to_checkpoint_names(state) if self.rank == 0 else None

    def weight_buckets(self, bucket_mb: float) -> list | None:
        """Gather the full weights (every rank takes part); rank 0 puts them into the object
        store in buckets and returns the refs, so the weights travel from rank 0 to the
        engines without passing through the driver."""
        from selfcritic.rollout.weights import put_buckets

        state = self.checkpoint_state()
        return put_buckets(state, bucket_mb) if self.rank == 0 else None

    def save_checkpoint(self, out_dir: str, model_path: str) -> str | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.learner.model, options=options)
        if self.rank != 0:
            return None
        from transformers import AutoModelForCausalLM

        from selfcritic.checkpoint import save_hf_checkpoint

        model = AutoModelForCausalLM.from_config(self.learner.model.config, dtype=torch.float32)
        model.load_state_dict(state, strict=True)
        return str(save_hf_checkpoint(model, Path(model_path), Path(out_dir)))

    def save_state(self, directory: str) -> None:
        self.learner.save_state(directory)

    def load_state(self, directory: str) -> None:
        self.learner.load_state(directory)

    def describe(self) -> str:
        return self.learner.optimizer.describe()

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # Device weight sync (rollout.weight_sync=cuda_ipc; selfcritic/rollout/device_sync.py)
    def device_weight_handles(self, bucket_mb: float, dtype: str) -> list | None:
        """Gather the full weights on the device one tensor at a time (every rank takes part);
        rank 0 packs them in buckets cast once to the engines' `dtype`, keeps the buffers until
        `release_device_weights`, and returns [(CUDA IPC handle, Layout)]."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from selfcritic.rollout.device_sync import DTYPES, ipc_handle, pack
        from selfcritic.rollout.weights import split_into_buckets, to_checkpoint_names

        sharded = get_model_state_dict(self.learner.model, options=StateDictOptions())
        full, cast = {}, DTYPES[dtype]
        for name, tensor in sharded.items():
            whole = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            if self.rank == 0:  # cast as gathered: rank 0 never holds the float32 model whole
                full[name] = whole.to(cast) if whole.is_floating_point() else whole
        if self.rank != 0:
            return None
        state = to_checkpoint_names(full)
        del full
        buckets = split_into_buckets(state, int(bucket_mb * 1024 * 1024))
        self._device_weights = [p for b in buckets for p in pack(b, DTYPES[dtype])]
        return [(ipc_handle(buffer), layout) for buffer, layout in self._device_weights]

    def release_device_weights(self) -> None:
        """Free the buffers of the last `device_weight_handles` (the engines have loaded)."""
        self._device_weights = []
        if torch.cuda.is_available():
            torch.cuda.ipc_collect()
            torch.cuda.empty_cache()

    # rollout.weight_sync=nccl (selfcritic/rollout/broadcast.py): rank 0 is the group's source
    def open_weight_broadcast(self) -> tuple[str, int]:
        """Rank 0 only: listen for the broadcast group's store at a port the OS assigns."""
        from selfcritic.learner.distributed import node_ip
        from selfcritic.rollout.device_sync import listen_socket

        host = node_ip()
        self._listening = listen_socket(host)
        return host, self._listening.getsockname()[1]

    def join_weight_broadcast(self, world_size: int) -> None:
        """Rank 0 only: join the group as rank 0 (blocks until every engine worker has)."""
        from selfcritic.rollout.device_sync import broadcast_group

        host, port = self._listening.getsockname()[:2]
        device = torch.device("cuda", torch.cuda.current_device())
        self._weight_group = broadcast_group(host, port, 0, world_size, device, self._listening)
        self._listening = None  # the store owns the socket now

    def _broadcast_plan(self, bucket_mb: float, dtype: str):
        """The sharded state and its bucket plan (shapes only: every rank computes the same)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from selfcritic.rollout.device_sync import DTYPES, plan_buckets
        from selfcritic.rollout.weights import to_checkpoint_names

        sharded = get_model_state_dict(self.learner.model, options=StateDictOptions())
        meta = {n: torch.empty(t.shape, dtype=t.dtype, device="meta") for n, t in sharded.items()}
        size = int(bucket_mb * 1024 * 1024)
        return sharded, plan_buckets(meta, size, DTYPES[dtype], to_checkpoint_names)

    def weight_layouts(self, bucket_mb: float, dtype: str) -> list:
        """Every bucket's layouts in broadcast order (what the engines allocate; no gather)."""
        _, plan = self._broadcast_plan(bucket_mb, dtype)
        return [layout for bucket in plan for layout in bucket.layouts]

    def broadcast_weights(self, bucket_mb: float, dtype: str) -> int:
        """Every rank gathers each whole tensor in plan order; rank 0 casts, packs and
        broadcasts bucket by bucket. Returns the bytes rank 0 sent (0 elsewhere)."""
        from functools import partial

        from selfcritic.learner.distributed import full_tensor
        from selfcritic.rollout.device_sync import DTYPES, broadcast_buffers, send_buckets
        from selfcritic.rollout.weights import to_checkpoint_names

        sharded, plan = self._broadcast_plan(bucket_mb, dtype)
        source = self.rank == 0
        send = partial(broadcast_buffers, self._weight_group) if source else None

        def fetch(name: str) -> torch.Tensor | None:
            whole = full_tensor(sharded[name])  # a collective: every rank, in plan order
            return whole if source else None

        device = torch.device("cuda", torch.cuda.current_device()) if source else None
        return send_buckets(plan, fetch, send, device, DTYPES[dtype], to_checkpoint_names)


def combine_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """One metrics dict from every rank's: sums, maxima, and rank 0's identical values."""
    combined: dict[str, float] = {}
    for metrics in per_rank:
        for key, value in metrics.items():
            if key not in combined:
                combined[key] = value
            elif key in _SUMMED:
                combined[key] += value
            elif key in _MAXED:
                combined[key] = max(combined[key], value)
    return combined


def _tokens_read(batch: PolicyBatch) -> int:
    policy = sum(len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True))
    critic = sum(len(e.prompt_ids) for e in batch.critic_examples)
    return policy + critic + sum(len(c) + len(t) for c, t in batch.ptx_sequences)


class LearnerGroup:
    """`cfg.world_size` learner ranks stepping as one learner; Ray must already be running."""

    def __init__(
        self,
        model_path: Path,
        cfg: LearnerConfig,
        optim_cfg: OptimConfig,
        trust_engine: bool,
        trust_remote_code: bool = False,
        placement_group=None,
    ) -> None:
        """`placement_group`: with GPUs, the run's (selfcritic/cluster.py, a bundle per rank,
        shared with colocated engines); None reserves one of its own."""
        import ray

        from selfcritic.cluster import in_bundle, reserve_gpus

        self.cfg = cfg
        self.owns_placement = placement_group is None and cfg.gpus_per_rank > 0
        if self.owns_placement:  # a group of its own: a bundle per rank, its GPU only
            placement_group = reserve_gpus(
                [{"CPU": cfg.cpus_per_rank, "GPU": 1.0} for _ in range(cfg.world_size)]
            )
        self.placement_group = placement_group
        actor = ray.remote(num_cpus=cfg.cpus_per_rank, num_gpus=cfg.gpus_per_rank)(_LearnerRank)
        self.ranks = [
            actor.options(**in_bundle(placement_group, index)).remote(
                cfg.threads_per_rank, cfg.cpu_cores
            )
            for index in range(cfg.world_size)
        ]
        try:
            host, port = ray.get(self.ranks[0].open_rendezvous.remote(cfg.world_size))
            self.pids = ray.get(
                [
                    rank.setup.remote(
                        index,
                        cfg.world_size,
                        host,
                        port,
                        str(model_path),
                        cfg,
                        optim_cfg,
                        trust_engine,
                        trust_remote_code,
                    )
                    for index, rank in enumerate(self.ranks)
                ]
            )
        except Exception:
            self._kill()
            raise

    def step(self, batch: PolicyBatch) -> dict[str, float]:
        """Learn `batch` as the plain `Learner.step` does: one optimizer step on the whole
        batch split across the ranks, or the steps of `update_plan` from a fixed old policy."""
        start = time.perf_counter()
        cfg = self.cfg
        metrics = learn_planned(
            batch, cfg.epochs, cfg.minibatches_per_epoch, self.update, self.own_logprobs
        )
        # each optimizer step of a plan reads its slice: an epoch reads the batch once
        read = _tokens_read(batch) * (cfg.epochs if "optimizer_steps" in metrics else 1)
        return metrics | {"tokens_per_second": read / max(time.perf_counter() - start, 1e-9)}

    def update(self, batch: PolicyBatch) -> dict[str, float]:
        """One optimizer step on the whole `batch`, split across the ranks."""
        import ray

        slices = split_batch(batch, len(self.ranks))
        totals = BatchTotals.of(batch)
        counts = [phase_passes(part, self.cfg) for part in slices]
        passes = {phase: max(c[phase] for c in counts) for phase in PHASES}
        per_rank = ray.get(
            [
                rank.step.remote(part, totals, passes)
                for rank, part in zip(self.ranks, slices, strict=True)
            ]
        )
        return combine_metrics(per_rank)

    def own_logprobs(self, batch: PolicyBatch) -> list[tuple[float, ...]]:
        """The current weights' logprobs of every completion of `batch`, computed by the ranks
        on their slices (in batch order)."""
        import ray

        slices = split_batch(batch, len(self.ranks))
        passes = max(phase_passes(part, self.cfg)["policy"] for part in slices)
        found = ray.get(
            [
                rank.own_logprobs.remote(part, passes)
                for rank, part in zip(self.ranks, slices, strict=True)
            ]
        )
        return [row for part in found for row in part]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Full weights and trained buffers under checkpoint names (rank 0's gathered copy)."""
        import ray

        return ray.get([rank.checkpoint_state.remote() for rank in self.ranks])[0]

    def weight_buckets(self, bucket_mb: float) -> list:
        """Refs to the full weights in the object store, put there by rank 0 (for
        `RolloutPool.load_buckets`)."""
        import ray

        return ray.get([rank.weight_buckets.remote(bucket_mb) for rank in self.ranks])[0]

    def save_checkpoint(self, out_dir: Path, model_path: Path) -> Path:
        """A Hugging Face checkpoint of the current weights (tokenizer files from `model_path`)."""
        import ray

        paths = ray.get(
            [rank.save_checkpoint.remote(str(out_dir), str(model_path)) for rank in self.ranks]
        )
        return Path(paths[0])

    def save_state(self, directory: Path) -> None:
        """Model and optimizer state for exact resume (every rank writes its shards; on several
        nodes `directory` must be on a shared filesystem)."""
        import ray

        ray.get([rank.save_state.remote(str(directory)) for rank in self.ranks])

    def load_state(self, directory: Path) -> None:
        import ray

        ray.get([rank.load_state.remote(str(directory)) for rank in self.ranks])

    def describe(self) -> str:
        import ray

        return ray.get(self.ranks[0].describe.remote())

    def shutdown(self) -> None:
        import ray

        if not self.ranks:
            return
        try:
            ray.get([rank.shutdown.remote() for rank in self.ranks], timeout=60)
        finally:
            self._kill()

    def _kill(self) -> None:
        import ray

        for rank in self.ranks:
            ray.kill(rank)
        self.ranks = []
        if self.owns_placement:
            ray.util.remove_placement_group(self.placement_group)
            self.owns_placement = False

    # Device weight sync (rollout.weight_sync=cuda_ipc; selfcritic/rollout/device_sync.py)
    def device_weight_sync(self, bucket_mb: float, dtype: str, load) -> int:
        """Rank 0's weights packed on its GPU, cast to the engines' `dtype`; `load(packed)` (the
        rollout pool's `load_handles`) opens them by CUDA IPC; rank 0 frees them after it
        returns. Returns what `load` returns (the new weight version)."""
        import ray

        handles = ray.get([r.device_weight_handles.remote(bucket_mb, dtype) for r in self.ranks])
        try:
            return load(handles[0])
        finally:
            ray.get(self.ranks[0].release_device_weights.remote())

    def open_weight_broadcast(self) -> tuple[str, int]:
        """(host, port) of the broadcast group's store, which rank 0 now listens on."""
        import ray

        return ray.get(self.ranks[0].open_weight_broadcast.remote())

    def join_weight_broadcast(self, world_size: int):
        """Rank 0 starts joining the group as its rank 0; the ref, to wait on together with
        the engines' joins."""
        return self.ranks[0].join_weight_broadcast.remote(world_size)

    def broadcast_weight_sync(self, bucket_mb: float, dtype: str, load) -> int:
        """rollout.weight_sync=nccl: `load(layouts, sending)` (the pool's `load_broadcast`)
        has the engines receive while the ranks' broadcast loop (`sending`, refs) runs, and
        waits on both; returns what it returns (the new weight version)."""
        import ray

        layouts = ray.get(self.ranks[0].weight_layouts.remote(bucket_mb, dtype))
        sending = [rank.broadcast_weights.remote(bucket_mb, dtype) for rank in self.ranks]
        return load(layouts, sending)
