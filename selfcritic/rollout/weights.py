"""Weights between the learner and the engines: names, buckets and transport form.

transformers 5 keeps routed experts fused in memory (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj` [E, H, I]); checkpoints and vLLM name each expert's matrices separately.
`to_checkpoint_names` splits them (buffers that training changes, the routers'
`e_score_correction_bias`, are included as they are); `to_transformers_names` is the inverse.
`split_into_buckets` cuts a state into transfer units of bounded size, in order, never splitting
a tensor. `require_known` refuses a sync naming a tensor the engine's checkpoint does not have
(vLLM's loaders skip some unknown names silently, e.g. a `.bias` a layer lacks, and fail on
others with the name rewritten). Left out: cross-node transport (an NCCL broadcast backend would
send the same buckets).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_GATE_UP = ".mlp.experts.gate_up_proj"
_DOWN = ".mlp.experts.down_proj"
_EXPERT = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def to_checkpoint_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split fused expert tensors into per-expert matrices; other tensors pass unchanged."""
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if name.endswith(_GATE_UP):
            prefix = name[: -len("gate_up_proj")]
            gate, up = tensor.chunk(2, dim=1)  # [E, 2I, H] -> two [E, I, H]
            for expert in range(tensor.shape[0]):
                converted[f"{prefix}{expert}.gate_proj.weight"] = gate[expert].contiguous()
                converted[f"{prefix}{expert}.up_proj.weight"] = up[expert].contiguous()
        elif name.endswith(_DOWN):
            prefix = name[: -len("down_proj")]
            for expert in range(tensor.shape[0]):
                converted[f"{prefix}{expert}.down_proj.weight"] = tensor[expert].contiguous()
        else:
            converted[name] = tensor.contiguous()
    return converted


def to_transformers_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack per-expert matrices back into transformers' fused tensors (the inverse)."""
    import torch

    fused: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        match = _EXPERT.match(name)
        if match is None:
            converted[name] = tensor
            continue
        prefix, expert, kind = match.group(1), int(match.group(2)), match.group(3)
        fused.setdefault(prefix, {}).setdefault(kind, {})[expert] = tensor
    for prefix, kinds in fused.items():
        count = len(kinds["down_proj"])
        gate = torch.stack([kinds["gate_proj"][e] for e in range(count)])
        up = torch.stack([kinds["up_proj"][e] for e in range(count)])
        converted[f"{prefix}.gate_up_proj"] = torch.cat([gate, up], dim=1)
        converted[f"{prefix}.down_proj"] = torch.stack(
            [kinds["down_proj"][e] for e in range(count)]
        )
    return converted


def split_into_buckets(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[dict]:
    """Consecutive groups of tensors of at most `bucket_bytes` each (a larger tensor: alone)."""
    buckets: list[dict] = []
    current: dict = {}
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def shareable(tensor):
    """A numpy view where numpy has the dtype (Ray shares those without a copy), else the
    tensor itself (bfloat16: pickled, one copy)."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        return tensor


def put_buckets(state: dict[str, torch.Tensor], bucket_mb: float) -> list:
    """Put `state` into Ray's object store as buckets of at most `bucket_mb`, each once, from
    the calling process (the learner's rank 0 sends its own gathered weights); returns the refs
    the engines load from."""
    import ray

    buckets = split_into_buckets(state, int(bucket_mb * 1024 * 1024))
    return [ray.put({name: shareable(t) for name, t in bucket.items()}) for bucket in buckets]


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    """Tensors as safetensors bytes (for engines in another process than their host)."""
    from safetensors.torch import save

    return save({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()})


class UnknownWeights(ValueError):
    """A weight sync named tensors that the engine's checkpoint does not have."""


def checkpoint_names(model_dir: Path) -> frozenset[str] | None:
    """The tensor names of the safetensors checkpoint in `model_dir` (read from the headers),
    plus `lm_head.weight` where the checkpoint has no output head of its own (it is tied to the
    embedding, and a learner's state still names it); None without a safetensors file."""
    from safetensors import safe_open

    names: set[str] = set()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as stream:
            names.update(stream.keys())
    if not names:
        return None
    return frozenset(names | {"lm_head.weight"})


def require_known(names: Iterable[str], known: frozenset[str], model_dir: Path) -> None:
    """Raise UnknownWeights naming the names (the first five) that `known` lacks."""
    unknown = sorted(set(names) - known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (and {len(unknown) - 5} more)" if unknown[5:] else "")
        raise UnknownWeights(
            f"weight sync: the engine's checkpoint ({model_dir}) has no tensor named {shown}; "
            "a sync sends checkpoint names (selfcritic/rollout/weights.py, to_checkpoint_names)"
        )
