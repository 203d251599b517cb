"""The learner: one policy-gradient optimisation step on a batch of scored samples.

It runs in the driver process on one device. Each micro-batch's forward also measures how far the
engine's sampling logprobs are from the learner's own on the same weights (before the update):
`logprob_diff_max` is the parity check the design asks for, reported every step.
Old-policy logprobs: the engine's, when trusted (`learner.old_logprobs`), or the learner's own.
With one optimizer step per batch, the learner's own logprobs before the update are exactly those
of this step's forward (same weights, same tokens), so "recompute" costs no extra pass here;
several passes over one batch would need a separate no-grad pass first.
Left out: the Ray learner group with FSDP2, the calibration and PTX losses, token-count
micro-batching (the learner issue adds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from selfcritic.config import LearnerConfig, OptimConfig
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.learner.losses import get_loss
from selfcritic.model.build import load_model
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.rollout.weights import to_checkpoint_names


@dataclass(frozen=True)
class PolicyBatch:
    """Sequences to learn from: token ids, sampling logprobs and one advantage each."""

    prompts: list[tuple[int, ...]]
    completions: list[tuple[int, ...]]
    old_logprobs: list[tuple[float, ...]]
    advantages: list[float]
    temperature: float


def trust_engine_logprobs(setting: str, rollout_dtype: str, on_gpu: bool) -> bool:
    """Resolve `learner.old_logprobs`: "auto" trusts the engine only where parity is verified
    (float32 on CPU: about 1e-6); bfloat16 or GPUs recompute."""
    if setting == "auto":
        return rollout_dtype == "float32" and not on_gpu
    return setting == "engine"


class Learner:
    """Holds the trainable model and its optimizer."""

    def __init__(
        self, model_path: Path, cfg: LearnerConfig, optim_cfg: OptimConfig, trust_engine: bool
    ) -> None:
        self.cfg, self.trust_engine = cfg, trust_engine
        self.model = load_model(model_path)
        self.model.train()
        self.optimizer = build_muonclip(self.model, optim_cfg)
        self.max_grad_norm = optim_cfg.max_grad_norm
        self.loss_fn = get_loss(cfg.loss)
        self.pad_id = self.model.config.pad_token_id or 0

    def step(self, batch: PolicyBatch) -> dict[str, float]:
        """Accumulate gradients over micro-batches, clip, and take one optimizer step."""
        total = len(batch.prompts)
        sums = {"loss": 0.0, "clip_fraction": 0.0, "ratio_mean": 0.0}
        diff_max, tokens = 0.0, 0
        for start in range(0, total, self.cfg.micro_batch_size):
            rows = slice(start, start + self.cfg.micro_batch_size)
            loss, stats, diff, count = self._micro_step(batch, rows, total)
            sums["loss"] += float(loss)
            for key in ("clip_fraction", "ratio_mean"):
                sums[key] += stats[key] * count
            diff_max, tokens = max(diff_max, diff), tokens + count
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        optimizer_metrics = self.optimizer.step()
        self.optimizer.zero_grad()
        return optimizer_metrics | {
            "loss": sums["loss"],
            "clip_fraction": sums["clip_fraction"] / max(tokens, 1),
            "ratio_mean": sums["ratio_mean"] / max(tokens, 1),
            "grad_norm": float(grad_norm),
            "logprob_diff_max": diff_max,
            "tokens": float(tokens),
        }

    def _micro_step(self, batch: PolicyBatch, rows: slice, total: int):
        prompts, completions = batch.prompts[rows], batch.completions[rows]
        ids, attention, mask = pad_batch(prompts, completions, self.pad_id)
        old = torch.zeros_like(mask)
        for row, (prompt, logprobs) in enumerate(
            zip(prompts, batch.old_logprobs[rows], strict=True)
        ):
            old[row, len(prompt) - 1 : len(prompt) - 1 + len(logprobs)] = torch.tensor(logprobs)
        advantages = torch.tensor(batch.advantages[rows], dtype=torch.float32)
        logprobs = token_logprobs(self.model, ids, attention, batch.temperature)
        reference = old if self.trust_engine else logprobs.detach()
        loss, stats = self.loss_fn(logprobs, reference, advantages, mask, self.cfg.clip_eps, total)
        loss.backward()
        diff = float(((logprobs.detach() - old).abs() * mask).max())
        return loss.detach(), stats, diff, int(mask.sum())

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Weights and trained buffers under checkpoint names (what engines load)."""
        return to_checkpoint_names(self.model.state_dict())
