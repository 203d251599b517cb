"""MuonClip for a causal LM: Muon + AdamW, then QK-Clip and router-bias balancing.

Grouping: 2-D weight matrices of the transformer body (router included) and fused 3-D expert
tensors (gate_up split into its two matrices) go to Muon; parameters matching
`optim.adamw_patterns` (embeddings and output head by default), norms and other 1-D parameters go
to AdamW. Every trainable parameter must land in exactly one group: an assertion guards it.
One `step()` = both optimizers' steps, then QK-Clip on the heads whose max logit (recorded during
this step's training forwards) passed tau, then the auxiliary-loss-free router-bias update
(DeepseekV3's routers; a dense model has none, and the update is a no-op). QK-Clip runs where the
attention allows it (`optim.qk_clip`: unset = there, true = required, false = off; QK-norm
attention such as Qwen3's cannot be clipped per head, see qk_clip.py).
`param_groups` lists both optimizers' live groups, so torch LR schedulers and the learner's
schedule drive it like any optimizer, before and after a resume.
Inside a torch.distributed group (the learner group's FSDP2 ranks) the recorded max logits are
all-reduced with MAX and the router loads with SUM before QK-Clip and the bias update, so every
rank takes the same decisions; Muon orthogonalises whole matrices (see muon.py).
"""

from __future__ import annotations

import torch

from selfcritic.config import Config, ConfigError, OptimConfig, keyed
from selfcritic.model.attention_capture import AttentionLogitCapture
from selfcritic.model.router_balance import RouterBalancer
from selfcritic.optim.muon import Muon
from selfcritic.optim.qk_clip import apply_qk_clip, qk_clip_layout
from selfcritic.preflight import Problems, preflight_check

_FUSED_PAIRS = ("gate_up_proj",)  # fused tensors that hold two checkpoint matrices per expert


def assign_group(name: str, param: torch.Tensor, adamw_patterns: list[str]) -> str:
    """'muon' or 'adamw' for one named parameter."""
    if any(pattern in name for pattern in adamw_patterns) or param.ndim < 2:
        return "adamw"
    return "muon"


def newton_schulz_dtype(setting: str, device: torch.device) -> torch.dtype:
    """'auto' is bfloat16 for parameters on a GPU and float32 on CPU (much faster there)."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[setting]


class MuonClip(torch.optim.Optimizer):
    """The optimizers of one model and its post-step weight rules, stepped together.

    Its `param_groups` are read from the inner optimizers each time (their own group dicts, not
    copies), so a rate written here reaches the optimizer that uses it, also after anything
    reloads an inner optimizer: torch's `Optimizer.load_state_dict`, whether called here or by
    torch.distributed.checkpoint's `set_state_dict` on the inner optimizers (as the learner
    group's resume does), replaces an optimizer's group dicts with new ones.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        groups: dict[str, list[str]],
        capture: AttentionLogitCapture | None,
        balancer: RouterBalancer,
        qk_clip_tau: float,
    ) -> None:
        inner_groups = [g for optimizer in optimizers.values() for g in optimizer.param_groups]
        super().__init__(inner_groups, defaults={})  # validates the groups; they stay inner
        self.model, self.optimizers, self.groups = model, optimizers, groups
        self.capture, self.balancer, self.qk_clip_tau = capture, balancer, qk_clip_tau

    @property
    def param_groups(self) -> list[dict]:
        optimizers = self.__dict__.get("optimizers")
        if optimizers is None:  # inside torch's __init__, before the inner optimizers are set
            return self.__dict__["_initial_groups"]
        return [g for optimizer in optimizers.values() for g in optimizer.param_groups]

    @param_groups.setter
    def param_groups(self, groups: list[dict]) -> None:
        # only torch's __init__ assigns it (to an empty list it then fills and validates)
        self.__dict__["_initial_groups"] = groups

    def step(self, closure=None) -> dict[str, float]:
        """Optimizer steps, QK-Clip, router-bias update; returns their metrics."""
        if closure is not None:
            raise ValueError("MuonClip.step takes no closure")
        for optimizer in self.optimizers.values():
            optimizer.step()
        if _in_process_group():
            if self.capture is not None:
                self.capture.all_reduce()
            self.balancer.all_reduce()
        metrics: dict[str, float] = {}
        if self.capture is not None:
            metrics.update(apply_qk_clip(self.model, self.capture.max_logits, self.qk_clip_tau))
            self.capture.reset()
        metrics.update(self.balancer.step())
        return metrics

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])

    def describe(self) -> str:
        """One line per group: how many tensors and parameters it holds."""
        lines = []
        for group, optimizer in self.optimizers.items():
            params = [p for g in optimizer.param_groups for p in g["params"]]
            count = sum(p.numel() for p in params)
            lines.append(f"  {group}: {len(params)} tensors, {count:,} parameters")
        clip = f"QK-Clip tau={self.qk_clip_tau}" if self.capture is not None else "QK-Clip off"
        lines.append(f"  {clip}; router-bias update u={self.balancer.update_rate}")
        return "\n".join(lines)


def build_muonclip(model: torch.nn.Module, cfg: OptimConfig) -> MuonClip:
    """Group the model's trainable parameters and build one optimizer per group."""
    named: dict[str, list[tuple[str, torch.Tensor]]] = {"muon": [], "adamw": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            named[assign_group(name, param, list(cfg.adamw_patterns))].append((name, param))
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
            ns_dtype=newton_schulz_dtype(cfg.newton_schulz_dtype, next(model.parameters()).device),
        ),
        "adamw": torch.optim.AdamW(
            [p for _, p in named["adamw"]],
            lr=cfg.adamw_lr,
            betas=tuple(cfg.adamw_betas),
            weight_decay=cfg.weight_decay,
        ),
    }
    return MuonClip(
        model=model,
        optimizers=optimizers,
        groups={k: [n for n, _ in v] for k, v in named.items()},
        capture=AttentionLogitCapture().install(model) if qk_clip_on(model, cfg) else None,
        balancer=RouterBalancer(model, cfg.router_bias_update),
        qk_clip_tau=cfg.qk_clip_tau,
    )


def qk_clip_on(model: torch.nn.Module, cfg: OptimConfig) -> bool:
    """Whether QK-Clip runs on `model`: `optim.qk_clip` false = no; unset = where every
    attention layer can be clipped; true = yes, and a model it cannot act on is refused."""
    if cfg.qk_clip is False:
        return False
    layouts = {qk_clip_layout(module) for module in model.modules()} - {None}
    applies = bool(layouts) and layouts <= {"mla", "per_head"}
    if cfg.qk_clip and not applies:
        found = ", ".join(sorted(layouts)) or "no attention layer it knows"
        raise ConfigError(
            keyed(
                "optim.qk_clip",
                f"QK-Clip cannot act on this model's attention ({found}; it clips MLA and "
                "Llama-shaped attention, not QK-norm attention): set optim.qk_clip=false",
            )
        )
    return applies


def _in_process_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _check_partition(model: torch.nn.Module, named: dict) -> None:
    """Every trainable parameter in exactly one group."""
    assigned = [id(p) for members in named.values() for _, p in members]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(assigned) == len(set(assigned)), "a parameter sits in two optimizer groups"
    assert set(assigned) == set(trainable), "a trainable parameter sits in no optimizer group"


@preflight_check
def _adamw_betas(cfg: Config, problems: Problems) -> None:
    """`optim.adamw_betas`: two numbers in [0, 1)."""
    betas = cfg.optim.adamw_betas
    problems.require(
        len(betas) == 2 and all(0 <= beta < 1 for beta in betas),
        "optim.adamw_betas",
        f"must be two numbers in [0, 1), got {list(betas)}",
    )
