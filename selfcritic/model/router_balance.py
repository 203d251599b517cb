"""Auxiliary-loss-free router balancing (DeepSeek-V3): nudge each expert's selection bias.

After each optimizer step, for every MoE layer: bias += u * sign(mean load - load of expert), where
a load is the number of tokens routed to the expert in this step's training forwards (counted by
forward hooks on the routers, only in training mode with gradients on). The bias only chooses
experts; gate weights never see it (transformers' router already works that way).
Metric: load imbalance per layer, max load / mean load (1.0 is perfect balance). Under data
parallelism each rank counts only its slice: `all_reduce` SUMS the counts over ranks before the
update, so every rank applies the same bias change and the biases stay identical everywhere.
Left out: excluding padding tokens from the counts (the router does not see the mask).
"""

from __future__ import annotations

import torch


class RouterBalancer:
    """Counts expert loads of a DeepseekV3 model and updates `e_score_correction_bias`."""

    def __init__(self, model: torch.nn.Module, update_rate: float) -> None:
        self.update_rate = update_rate
        self.routers: dict[str, torch.nn.Module] = {
            name: module
            for name, module in model.named_modules()
            if hasattr(module, "e_score_correction_bias")
        }
        self.loads: dict[str, torch.Tensor] = {}
        for name, router in self.routers.items():
            router.register_forward_hook(self._counter(name))

    def _counter(self, name: str):
        def hook(module, inputs, output) -> None:
            if not (module.training and torch.is_grad_enabled()):
                return
            indices = output[-1]  # [tokens, top_k] chosen experts
            counts = torch.bincount(indices.flatten(), minlength=module.num_experts)
            self.loads[name] = self.loads.get(name, 0) + counts.detach().float()

        return hook

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Replace this rank's counts by the sums over all ranks (a collective). A router that
        no rank counted stays absent; one counted anywhere is present on every rank."""
        import torch.distributed as dist

        names = sorted(self.routers)
        if not names:
            return
        experts = max(router.num_experts for router in self.routers.values())
        device = "cuda" if "nccl" in dist.get_backend() else "cpu"
        table = torch.zeros(len(names), experts + 1, device=device)  # last column: counted here
        for row, name in enumerate(names):
            if name in self.loads:
                load = self.loads[name]
                table[row, : load.numel()] = load
                table[row, -1] = 1.0
        dist.all_reduce(table, op=dist.ReduceOp.SUM)
        self.loads = {
            name: table[row, : self.routers[name].num_experts].clone()
            for row, name in enumerate(names)
            if table[row, -1] > 0
        }

    @torch.no_grad()
    def step(self) -> dict[str, float]:
        """Update every router bias from the loads counted since the last step; reset counts."""
        metrics = {}
        for name, load in sorted(self.loads.items()):
            imbalance = float(load.max() / load.mean().clamp(min=1e-9))
            metrics[f"moe/imbalance/layer_{_layer_of(name)}"] = imbalance
            if self.update_rate > 0:
                bias = self.routers[name].e_score_correction_bias
                bias.add_((self.update_rate * torch.sign(load.mean() - load)).to(bias.dtype))
        if metrics:
            metrics["moe/imbalance_max"] = max(metrics.values())
        self.loads = {}
        return metrics


def _layer_of(module_name: str) -> str:
    """'model.layers.3.mlp.gate' -> '3'."""
    parts = module_name.split(".")
    return parts[parts.index("layers") + 1] if "layers" in parts else module_name
