"""Convert a transformers DeepseekV3 state dict to the checkpoint names inference engines load.

transformers 5 keeps routed experts fused in memory (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj` [E, H, I]); checkpoints and vLLM name each expert's matrices
separately. Buffers that training changes (the routers' `e_score_correction_bias`) are included.
Left out: bucketing and cross-node transport (the rollout work adds them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_GATE_UP = ".mlp.experts.gate_up_proj"
_DOWN = ".mlp.experts.down_proj"


def to_checkpoint_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split fused expert tensors into per-expert matrices; other tensors pass unchanged."""
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
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


def serialize(state: dict[str, torch.Tensor]) -> bytes:
    """Checkpoint-named tensors as safetensors bytes (what crosses process boundaries)."""
    from safetensors.torch import save

    return save({name: tensor.detach().cpu() for name, tensor in state.items()})
