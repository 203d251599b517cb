"""QK-Clip (Kimi K2): after the optimizer step, shrink the query/key weights of every attention
head whose largest pre-softmax logit exceeded tau, so that the same batch would peak at tau.

For head h with S_max(h) > tau, gamma_h = tau / S_max(h), and for MLA:
- the head's query and key "nope" rows (q_b_proj or q_proj, and kv_b_proj's key rows) are scaled
  by sqrt(gamma_h): their product scales by gamma_h;
- the head's rotary query rows are scaled by gamma_h;
- the shared rotary key (kv_a_proj_with_mqa) and the value rows are untouched, so clipping one head
  leaves the others exactly as they were.
The logit q . k = q_nope . k_nope + q_rope . k_rope therefore scales by exactly gamma_h.
For Llama-shaped attention (q_proj and k_proj with per-head rows, RoPE after them: a rotation,
linear, so scaled rows give a scaled rotated head):
- grouped-query attention (each key head shared by several query heads): the head's q_proj rows
  (and bias) are scaled by gamma_h and k_proj is untouched, the rule K2 uses for MLA's shared
  rotary key;
- plain multi-head attention (one key head per query head): q and k rows by sqrt(gamma_h) each,
  K2's rule for MHA.
QK-norm attention (Qwen3: RMSNorm per head after q_proj and k_proj, weights shared by all
heads) is refused: the norm divides a rescaled row back to its old size, so no per-head scale
of the projections reaches the logit (`qk_clip_layout` says "qk_norm"; selfcritic/model/
families.py refuses `optim.qk_clip=true` for it before any work).
Heads at or under tau are not touched (bit for bit: their rows are multiplied by 1.0). Weights
sharded by FSDP2 (DTensors, rows split across ranks) scale their local rows; every rank computes
the same factors from the same all-reduced maxima. Left out: layouts other than these three.
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


def qk_clip_layout(module: torch.nn.Module) -> str | None:
    """ "mla", "per_head" (Llama-shaped), "qk_norm" (no per-head clip possible) for an
    attention module; None for any other module."""
    if getattr(module, "layer_idx", None) is None:
        return None
    if hasattr(module, "kv_b_proj"):
        return "mla"
    if not (hasattr(module, "q_proj") and hasattr(module, "k_proj")):
        return None
    if hasattr(module, "q_norm") or hasattr(module, "k_norm"):
        return "qk_norm"
    return "per_head"


@torch.no_grad()
def clip_query_heads(attention: torch.nn.Module, gamma: torch.Tensor) -> int:
    """Rescale one Llama-shaped attention's clipped heads in place (q_proj rows by gamma, or q
    and k rows by sqrt(gamma) when no key head is shared); returns how many were clipped."""
    heads = torch.nonzero(gamma < 1).flatten()
    if heads.numel() == 0:
        return 0
    head_dim, query_heads = attention.head_dim, gamma.numel()
    key_heads = attention.k_proj.weight.shape[0] // head_dim
    shared = query_heads != key_heads  # grouped-query: key head h // (query_heads / key_heads)
    g = gamma.to(attention.q_proj.weight.dtype)
    q_scale = torch.ones(query_heads, dtype=g.dtype, device=g.device)
    q_scale[heads] = g[heads] if shared else g[heads].sqrt()
    _scale_projection(attention.q_proj, q_scale.repeat_interleave(head_dim))
    if not shared:
        _scale_projection(attention.k_proj, q_scale.repeat_interleave(head_dim))
    return int(heads.numel())


def _scale_projection(linear: torch.nn.Module, scale: torch.Tensor) -> None:
    """Output rows of a linear layer (weight and bias alike) times `scale`."""
    _scale_rows(linear.weight, scale)
    if getattr(linear, "bias", None) is not None:
        _scale_rows(linear.bias, scale)


def _scale_rows(weight: torch.Tensor, scale: torch.Tensor) -> None:
    """weight[r, ...] *= scale[r]; a DTensor weight (FSDP2, rows sharded) scales its own rows."""
    scale = scale.to(weight.device).view(-1, *([1] * (weight.ndim - 1)))  # [out, 1] or [out]
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
        layout, layer = qk_clip_layout(module), getattr(module, "layer_idx", None)
        if layout is None or layer not in max_logits:
            continue
        if layout == "qk_norm":
            raise ValueError(
                f"QK-Clip cannot act on {type(module).__name__} (QK-norm attention): set "
                "optim.qk_clip=false"
            )
        maxima = max_logits[layer]
        metrics[f"muonclip/max_logit/layer_{layer}"] = float(maxima.max())
        clip = clip_mla_heads if layout == "mla" else clip_query_heads
        clipped += clip(module, clip_factors(maxima, tau))
    metrics["muonclip/heads_clipped"] = float(clipped)
    if max_logits:
        metrics["muonclip/max_logit"] = max(float(m.max()) for m in max_logits.values())
    return metrics
