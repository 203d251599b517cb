"""Build the optimizer pair for a DeepseekV3 model: Muon for matrices, AdamW for the rest.

Grouping: 2-D weight matrices of the transformer body (router included) and fused 3-D expert
tensors (gate_up split into its two matrices) go to Muon; embeddings, the output head, norms and
other 1-D parameters go to AdamW. Every trainable parameter must land in exactly one group: an
assertion guards it. Left out: QK-Clip (needs attention-logit capture; the model/MuonClip issue
adds both) and LR schedules over the pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfcritic.config import OptimConfig
from selfcritic.optim.muon import Muon

_ADAMW_NAMES = ("embed_tokens", "lm_head")
_FUSED_PAIRS = ("gate_up_proj",)  # fused tensors that hold two checkpoint matrices per expert


def assign_group(name: str, param: torch.Tensor) -> str:
    """'muon' or 'adamw' for one named parameter."""
    if any(part in name for part in _ADAMW_NAMES) or param.ndim < 2:
        return "adamw"
    return "muon"


def newton_schulz_dtype(setting: str) -> torch.dtype:
    """'auto' is bfloat16 on CUDA and float32 on CPU (much faster there)."""
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[setting]


@dataclass
class MuonClip:
    """The optimizers of one model, stepped together."""

    optimizers: dict[str, torch.optim.Optimizer]
    groups: dict[str, list[str]]  # group name -> parameter names, for display and checks

    def step(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])

    def describe(self) -> str:
        """One line per group: how many tensors and parameters it holds."""
        lines = []
        for group, optimizer in self.optimizers.items():
            params = [p for g in optimizer.param_groups for p in g["params"]]
            count = sum(p.numel() for p in params)
            lines.append(f"  {group}: {len(params)} tensors, {count:,} parameters")
        return "\n".join(lines)


def build_muonclip(model: torch.nn.Module, cfg: OptimConfig) -> MuonClip:
    """Group the model's trainable parameters and build one optimizer per group."""
    named: dict[str, list[tuple[str, torch.Tensor]]] = {"muon": [], "adamw": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            named[assign_group(name, param)].append((name, param))
    _check_partition(model, named)
    muon_groups = [
        {"params": [p], "splits": 2 if name.endswith(_FUSED_PAIRS) else 1}
        for name, p in named["muon"]
    ]
    optimizers = {
        "muon": Muon(
            muon_groups,
            lr=cfg.muon_lr,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            ns_dtype=newton_schulz_dtype(cfg.newton_schulz_dtype),
        ),
        "adamw": torch.optim.AdamW(
            [p for _, p in named["adamw"]],
            lr=cfg.adamw_lr,
            betas=tuple(cfg.adamw_betas),
            weight_decay=cfg.weight_decay,
        ),
    }
    return MuonClip(optimizers, {k: [n for n, _ in v] for k, v in named.items()})


def _check_partition(model: torch.nn.Module, named: dict) -> None:
    """Every trainable parameter in exactly one group."""
    assigned = [id(p) for members in named.values() for _, p in members]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(assigned) == len(set(assigned)), "a parameter sits in two optimizer groups"
    assert set(assigned) == set(trainable), "a trainable parameter sits in no optimizer group"
