"""QK-Clip (Kimi K2): after the optimizer step, shrink the query/key weights of every attention
head whose largest pre-softmax logit exceeded tau, so that the same batch would peak at tau.

For head h with S_max(h) > tau, gamma_h = tau / S_max(h), and for MLA:
- the head's query and key "nope" rows (q_b_proj or q_proj, and kv_b_proj's key rows) are scaled
  by sqrt(gamma_h): their product scales by gamma_h;
- the head's rotary query rows are scaled by gamma_h;
- the shared rotary key (kv_a_proj_with_mqa) and the value rows are untouched, so clipping one head
  leaves the others exactly as they were.
The logit q . k = q_nope . k_nope + q_rope . k_rope therefore scales by exactly gamma_h.
Heads at or under tau are not touched (bit for bit: their rows are multiplied by 1.0). Weights
sharded by FSDP2 (DTensors, rows split across ranks) scale their local rows; every rank computes
the same factors from the same all-reduced maxima. Left out: plain multi-head attention layouts.
"""

from __future__ import annotations

import torch


def clip_factors(max_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """gamma per head [H]: tau / S_max where S_max > tau, else 1."""
    return torch.where(max_logits > tau, tau / max_logits, torch.ones_like(max_logits))


@torch.no_grad()
def clip_mla_heads(attention: torch.nn.Module, gamma: torch.Tensor) -> int:
    """Rescale one DeepseekV3Attention's clipped heads in place; returns how many were clipped."""
    heads = torch.nonzero(gamma < 1).flatten()
    if heads.numel() == 0:
        return 0
    nope, rope, value = attention.qk_nope_head_dim, attention.qk_rope_head_dim, attention.v_head_dim
    query = attention.q_b_proj if attention.q_lora_rank is not None else attention.q_proj
    g = gamma[heads].to(query.weight.dtype)[:, None]
    q_scale = torch.ones(
        attention.num_heads, nope + rope, dtype=g.dtype, device=g.device
    )  # per output row
    q_scale[heads, :nope] = g.sqrt()
    q_scale[heads, nope:] = g
    kv_scale = torch.ones(attention.num_heads, nope + value, dtype=g.dtype, device=g.device)
    kv_scale[heads, :nope] = g.sqrt()  # key rows; value rows [nope:] untouched
    _scale_rows(query.weight, q_scale.flatten())
    _scale_rows(attention.kv_b_proj.weight, kv_scale.flatten())
    return int(heads.numel())


def _scale_rows(weight: torch.Tensor, scale: torch.Tensor) -> None:
    """weight[r, :] *= scale[r]; a DTensor weight (FSDP2, rows sharded) scales its own rows."""
    scale = scale.to(weight.device)[:, None]  # [out, 1]
    if hasattr(weight, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        # every rank holds the same scale: take the rows laid out like the weight's shard
        scale = distribute_tensor(scale, weight.device_mesh, weight.placements, src_data_rank=None)
    weight.mul_(scale)


def apply_qk_clip(
    model: torch.nn.Module, max_logits: dict[int, torch.Tensor], tau: float
) -> dict[str, float]:
    """Clip every layer with recorded maxima; returns metrics (max logit per layer, heads)."""
    metrics: dict[str, float] = {}
    clipped = 0
    for module in model.modules():
        layer = getattr(module, "layer_idx", None)
        if layer is None or layer not in max_logits or not hasattr(module, "kv_b_proj"):
            continue
        maxima = max_logits[layer]
        metrics[f"muonclip/max_logit/layer_{layer}"] = float(maxima.max())
        clipped += clip_mla_heads(module, clip_factors(maxima, tau))
    metrics["muonclip/heads_clipped"] = float(clipped)
    if max_logits:
        metrics["muonclip/max_logit"] = max(float(m.max()) for m in max_logits.values())
    return metrics
