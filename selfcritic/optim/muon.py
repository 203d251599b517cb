"""Muon for weight matrices, 2-D and fused 3-D expert tensors alike.

Update (torch.optim.Muon's form, "match_rms_adamw" rule): M = mu*M + (1-mu)*G; with Nesterov the
direction is (1-mu)*G + mu*M; W = W*(1 - lr*wd) - lr * 0.2*sqrt(max(rows, cols)) * NS(direction).
A 2-D parameter is one matrix. A 3-D parameter [E, R, C] holds E expert matrices, each
orthogonalised on its own; with `splits=2` (transformers' fused gate_up_proj, [E, 2I, H]) each
expert's block is two matrices (gate and up, as the checkpoint stores them).

Why not torch.optim.Muon: it refuses 3-D tensors and hard-codes bfloat16 Newton-Schulz, which on
CPUs without bfloat16 matrix units is several times slower than float32 (on this 2-core machine
the W1 model's Muon step took 4.5 s in bfloat16); here the dtype is a setting. A unit test checks
this class against torch.optim.Muon on 2-D matrices.

Under FSDP2 parameters, gradients and momentum buffers are DTensors sharded on dim 0, and Muon
must orthogonalise each WHOLE matrix, not each rank's rows (the polar factor of a block of rows
is not the rows of the polar factor). A 2-D update is therefore gathered (`full_tensor()` of the
momentum-updated direction), orthogonalised on every rank alike (same input, same result), and
each rank applies its own rows of it. A 3-D expert tensor [E, R, C] sharded on dim 0 holds whole
experts on each rank, and each expert is orthogonalised on its own, so its shard is
orthogonalised locally with no communication. Momentum, weight decay and the update itself stay
on the local shard. Left out: striping the Newton-Schulz work of 2-D matrices across ranks (each
rank now repeats it; fine while it is a small part of the step).
"""

from __future__ import annotations

import torch

from selfcritic.optim.newton_schulz import adamw_rms_scale, orthogonalize


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: in-place edits reach the DTensor), or `tensor`."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _experts_whole_on_each_rank(tensor: torch.Tensor) -> bool:
    """A 3-D DTensor sharded only on dim 0 (experts) or replicated: every rank's shard holds
    whole expert matrices, which are orthogonalised one at a time anyway."""
    placements = getattr(tensor, "placements", ())
    return tensor.ndim == 3 and all(p.is_replicate() or p.is_shard(0) for p in placements)


def orthogonalized_update(
    direction: torch.Tensor, rows: int, cols: int, dtype: torch.dtype
) -> torch.Tensor:
    """This rank's part ([local shape]) of NS(direction), each [rows, cols] block on its own,
    computed from whole matrices whether or not `direction` is a sharded DTensor."""
    if not hasattr(direction, "device_mesh") or _experts_whole_on_each_rank(direction):
        local = _local(direction)
        return orthogonalize(local.reshape(-1, rows, cols), dtype=dtype).reshape_as(local)
    from torch.distributed.tensor import distribute_tensor

    full = direction.full_tensor()  # a collective: every rank gathers every matrix
    update = orthogonalize(full.reshape(-1, rows, cols), dtype=dtype).reshape_as(full)
    # every rank holds the same `update`: keep this rank's rows, no communication
    return distribute_tensor(
        update, direction.device_mesh, direction.placements, src_data_rank=None
    ).to_local()


class Muon(torch.optim.Optimizer):
    """Muon over 2-D matrices and 3-D [experts, rows, cols] tensors; groups may set `splits`."""

    def __init__(
        self,
        params,
        lr: float = 0.02,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_dtype: torch.dtype = torch.float32,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            splits=1,
            ns_dtype=ns_dtype,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        if param.ndim not in (2, 3):
            raise ValueError(f"Muon takes 2-D or 3-D parameters, got shape {tuple(param.shape)}")
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buffer = state["momentum_buffer"]
        buffer.lerp_(param.grad, 1 - group["momentum"])
        direction = param.grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer
        rows, cols = param.shape[-2] // group["splits"], param.shape[-1]
        update = orthogonalized_update(direction, rows, cols, group["ns_dtype"])
        weights = _local(param)
        weights.mul_(1 - group["lr"] * group["weight_decay"])
        weights.add_(update, alpha=-group["lr"] * adamw_rms_scale(rows, cols))
