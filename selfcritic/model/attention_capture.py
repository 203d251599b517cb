"""Record each attention head's largest pre-softmax logit during training forwards.

QK-Clip needs, per layer and head, S_max(h) = max over the batch of q_i . k_j * scale, where scale
is the one the model's softmax really uses (transformers' DeepseekV3 folds the YaRN mscale into
`module.scaling`, which the attention function receives) and masked pairs do not count. We register
an attention function with transformers' AttentionInterface that computes these maxima block by
block over query positions (memory grows with block x keys, never queries x keys) and then hands
the real attention to transformers' SDPA kernel. Under grouped-query attention (Qwen3, Llama) the
kernel receives fewer key heads than query heads: query head h meets key head h // (query heads /
key heads), as transformers' `repeat_kv` pairs them. The boolean mask comes from the SDPA mask
builder, registered under the same name (a custom attention name without a mask function would
silently get no padding mask). Capture runs only for modules in training mode with gradients
enabled: no-grad and generation passes pay nothing. Under data parallelism each rank sees only its
slice of the batch: `all_reduce` takes the MAX over ranks, so that every rank clips the same heads
by the same factors.
"""

from __future__ import annotations

import torch

ATTENTION_NAME = "selfcritic_sdpa_capture"
_registered = False


class AttentionLogitCapture:
    """Per-layer running maxima [heads] since the last `reset`; attach with `install`."""

    def __init__(self, block_size: int = 128) -> None:
        self.block_size = block_size
        self.max_logits: dict[int, torch.Tensor] = {}
        self.heads: dict[int, int] = {}  # layer -> attention heads, filled by `install`

    def reset(self) -> None:
        self.max_logits = {}

    def record(self, layer: int, values: torch.Tensor) -> None:
        previous = self.max_logits.get(layer)
        self.max_logits[layer] = values if previous is None else torch.maximum(previous, values)

    def install(self, model: torch.nn.Module) -> AttentionLogitCapture:
        """Switch `model` to the capturing kernel and route its attention modules here."""
        register_attention()
        model.set_attn_implementation(ATTENTION_NAME)
        for module in model.modules():
            if hasattr(module, "kv_b_proj") or hasattr(module, "q_proj"):
                module._logit_capture = self
                if getattr(module, "layer_idx", None) is not None:
                    heads = getattr(module, "num_heads", None) or module.config.num_attention_heads
                    self.heads[module.layer_idx] = heads
        return self

    @torch.no_grad()
    def all_reduce(self) -> None:
        """Replace this rank's maxima by the maxima over all ranks (a collective). A layer no
        rank recorded stays absent; one recorded anywhere is present on every rank."""
        import torch.distributed as dist

        if not self.heads:
            return
        layers = sorted(self.heads)
        device = "cuda" if "nccl" in dist.get_backend() else "cpu"
        table = torch.full((len(layers), max(self.heads.values())), float("-inf"), device=device)
        for row, layer in enumerate(layers):
            if layer in self.max_logits:
                table[row, : self.heads[layer]] = self.max_logits[layer]
        dist.all_reduce(table, op=dist.ReduceOp.MAX)
        self.max_logits = {
            layer: table[row, : self.heads[layer]].clone()
            for row, layer in enumerate(layers)
            if torch.isfinite(table[row]).any()
        }


def head_max_logits(
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, H or H / group, K, D] (grouped-query: one key head per group)
    allowed: torch.Tensor | None,  # [B, 1 or H, Q, K] bool, None = causal
    scaling: float,
    block_size: int,
) -> torch.Tensor:
    """Max of q . k * scaling over batch, allowed (query, key) pairs and real queries: [H]."""
    batch, heads, queries, _ = query.shape
    keys = key.shape[2]
    if key.shape[1] != heads:  # query head h attends with key head h // group
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
    result = torch.full((heads,), float("-inf"), dtype=torch.float32, device=query.device)
    real_query = _real_queries(allowed, batch, queries, keys)  # [B, Q]
    for start in range(0, queries, block_size):
        stop = min(start + block_size, queries)
        scores = torch.matmul(query[:, :, start:stop].float(), key.float().transpose(-1, -2))
        scores = scores * scaling  # [B, H, q, K]
        mask = _block_mask(allowed, start, stop, queries, keys, query.device)
        mask = mask & real_query[:, None, start:stop, None]
        scores = scores.masked_fill(~mask, float("-inf"))
        result = torch.maximum(result, scores.amax(dim=(0, 2, 3)))
    return result


def _block_mask(allowed, start: int, stop: int, queries: int, keys: int, device) -> torch.Tensor:
    """[B or 1, 1 or H, stop-start, K] bool: which (query, key) pairs of the block count."""
    if allowed is None:  # causal; query i sits at key position i + (keys - queries)
        rows = torch.arange(start, stop, device=device)[:, None] + (keys - queries)
        return (torch.arange(keys, device=device)[None, :] <= rows)[None, None]
    if allowed.dtype != torch.bool:  # an additive float mask: 0 where allowed
        allowed = allowed > torch.finfo(allowed.dtype).min / 2
    return allowed[:, :, start:stop]


def _real_queries(allowed, batch: int, queries: int, keys: int) -> torch.Tensor:
    """[B, Q]: a query is real when it may attend to its own position (right padding is not)."""
    if allowed is None or queries != keys:
        return torch.ones(batch, queries, dtype=torch.bool)
    if allowed.dtype != torch.bool:
        allowed = allowed > torch.finfo(allowed.dtype).min / 2
    return allowed[:, 0].diagonal(dim1=-2, dim2=-1)


def _capturing_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = getattr(module, "_logit_capture", None)
    if capture is not None and module.training and torch.is_grad_enabled():
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        with torch.no_grad():
            maxima = head_max_logits(query, key, attention_mask, scale, capture.block_size)
        capture.record(module.layer_idx, maxima)
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, **kwargs
    )


def register_attention() -> None:
    """Register the capturing kernel and its mask builder with transformers (once)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _capturing_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True
