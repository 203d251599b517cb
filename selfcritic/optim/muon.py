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
"""

from __future__ import annotations

import torch

from selfcritic.optim.newton_schulz import adamw_rms_scale, orthogonalize


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
        blocks = direction.reshape(-1, rows, cols)  # [matrices, rows, cols]
        update = orthogonalize(blocks, dtype=group["ns_dtype"]).reshape_as(param)
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(update, alpha=-group["lr"] * adamw_rms_scale(rows, cols))
