"""torch.distributed plumbing of the learner group: rendezvous, FSDP2 sharding, batch slices.

- Rendezvous: rank 0 opens a TCP store on its node's IP, on a port the OS picks as it binds;
  every rank joins `init_process_group` through that store (gloo on CPU, NCCL when the rank
  has a GPU).
- Sharding: `shard_model` applies FSDP2's `fully_shard` to each decoder layer, then to the root,
  at every world size (1 included), so the tested path is the path used at scale. Gradients are
  SUMMED over ranks (FSDP2 averages by default): every rank's loss is already normalised by the
  whole batch's totals, so the sum is the full-batch gradient.
- Slicing: `split_batch` cuts a `PolicyBatch` into contiguous per-rank slices of its sequences,
  critic examples and PTX sequences; `BatchTotals` carries the whole batch's normalisers.
Left out: hybrid sharding across nodes (HSDP) and expert parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from selfcritic.learner.learner import PolicyBatch


@dataclass(frozen=True)
class BatchTotals:
    """Whole-batch normalisers, identical on every rank whatever its slice."""

    sequences: int  # policy sequences
    tokens: int  # policy completion tokens the model wrote (loss mask 1)
    calibration_weight: float  # sum of the critic examples' weights
    ptx_tokens: int  # target tokens of the PTX pairs
    # policy tokens the model wrote that carry the engine's logprob (the normaliser of
    # `logprob_diff_mean`)
    reported_tokens: int

    @staticmethod
    def of(batch: PolicyBatch) -> BatchTotals:
        masks = batch.loss_masks or [(1,) * len(c) for c in batch.completions]
        return BatchTotals(
            sequences=len(batch.prompts),
            tokens=sum(sum(m) for m in masks),
            calibration_weight=sum(e.weight for e in batch.critic_examples),
            ptx_tokens=sum(len(target) for _, target in batch.ptx_sequences),
            reported_tokens=sum(
                sum(m[: len(lp)]) for m, lp in zip(masks, batch.old_logprobs, strict=True)
            ),
        )


def _slices(count: int, parts: int) -> list[slice]:
    """Contiguous near-equal slices (the first `count % parts` one item longer)."""
    size, extra = divmod(count, parts)
    bounds = [0]
    for part in range(parts):
        bounds.append(bounds[-1] + size + (1 if part < extra else 0))
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def split_batch(batch: PolicyBatch, parts: int) -> list[PolicyBatch]:
    """Per-rank slices of the sequences, critic examples and PTX sequences (any may be empty)."""
    policy = _slices(len(batch.prompts), parts)
    critic = _slices(len(batch.critic_examples), parts)
    ptx = _slices(len(batch.ptx_sequences), parts)
    return [
        replace(
            batch,
            prompts=batch.prompts[p],
            completions=batch.completions[p],
            old_logprobs=batch.old_logprobs[p],
            advantages=batch.advantages[p],
            loss_masks=batch.loss_masks[p],
            before_update=batch.before_update[p],
            critic_examples=batch.critic_examples[c],
            ptx_sequences=batch.ptx_sequences[x],
        )
        for p, c, x in zip(policy, critic, ptx, strict=True)
    ]


def node_ip() -> str:
    """This node's IP as Ray sees it (127.0.0.1 without Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside a Ray worker: one machine
        return "127.0.0.1"


RENDEZVOUS_TIMEOUT_MINUTES = 10


def open_store(host: str, world_size: int):
    """Rank 0's rendezvous store, bound to a port the OS assigns while binding (port 0), so no
    other process can take it in between. (A port found free first and bound later was taken
    by a job running alongside once: EADDRINUSE at init.) Its port is `store.port`. It does
    not wait for the other ranks here: they learn the port from this call's caller."""
    import datetime

    import torch.distributed as dist

    timeout = datetime.timedelta(minutes=RENDEZVOUS_TIMEOUT_MINUTES)
    return dist.TCPStore(
        host, 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False
    )


def backend(device: str) -> str:
    """gloo for a CPU rank; on a GPU rank NCCL for CUDA tensors and gloo for any CPU tensor a
    collective meets (a rank's device decides, not whether CUDA is visible: a CPU learner on a
    GPU node keeps gloo)."""
    return "cpu:gloo,cuda:nccl" if device == "cuda" else "gloo"


def init_process_group(
    rank: int, world_size: int, host: str, port: int, store=None, device: str = "cpu"
) -> None:
    """Join the group through rank 0's store at host:port (rank 0 passes the `store` it
    opened), on `device` ("cpu" or "cuda": the rank's, from `learner/device.py`); the call
    returns once every rank has joined."""
    import datetime

    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(0)  # Ray exposes each rank's own GPU as device 0
    timeout = datetime.timedelta(minutes=RENDEZVOUS_TIMEOUT_MINUTES)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(
        backend=backend(device), store=store, rank=rank, world_size=world_size, timeout=timeout
    )


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def shard_model(
    model: torch.nn.Module, reshard_root: bool | None = None, mp_policy=None
) -> torch.nn.Module:
    """FSDP2 over every decoder layer, then the root; gradients summed over ranks; with
    `mp_policy` (selfcritic/learner/device.py), computing in its dtype."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    policy = mp_policy or MixedPrecisionPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, reshard_after_forward=reshard_root, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # SUM, not AVG: with divide factor 1 and sum-only collectives FSDP2 neither pre- nor
            # post-divides (gloo has no PREMUL_SUM, so the factor must not turn into one).
            module.set_force_sum_reduction_for_comms(True)
            module.set_gradient_divide_factor(1.0)
    return model


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective: every rank must call it); a plain tensor
    as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def like_sharded(full: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`full` laid out like the DTensor `reference` (this rank's slice, no communication:
    every rank holds the same `full`); a plain `reference` gets `full` itself."""
    if not hasattr(reference, "device_mesh"):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, reference.device_mesh, reference.placements, src_data_rank=None)
