"""The learner: one policy-gradient optimisation step on a batch of scored samples.

It runs in the driver process on one device. A batch is split into micro-batches of at most
`learner.max_tokens_per_micro_batch` padded tokens; gradients accumulate and every loss is
normalised by whole-batch totals (`LossScale`), so the update does not depend on the split.
Each micro-batch's forward also measures how far the engine's sampling logprobs are from the
learner's own on the same weights (before the update): `logprob_diff_max` and
`logprob_diff_mean` (the largest and the mean |engine - learner| over the tokens the engine
reported), on every step whose samples carry them (a sample without them, `Sample.logprobs`
empty, is skipped; a batch with none reports no difference rather than 0).
Old-policy logprobs: the engine's, when trusted (`learner.old_logprobs`) and reported, or the
learner's own. With one optimizer step per batch, the learner's own logprobs before the update
are exactly those of this step's forward (same weights, same tokens), so "recompute" costs no
extra pass here. With several (`learner.epochs`, `minibatches_per_epoch`: `update_plan`), one
no-grad forward fixes them before the first step (`PolicyBatch.before_update`).
With `kl_beta` > 0 a frozen reference model (the starting weights, loaded once) adds beta * KL.
Not trusting the engine, the policy terms are weighted by truncated importance sampling
(min(pi_old / pi_engine, tis_cap): `tis_weight_mean`, and `tis_clipped_fraction` the share of
tokens whose ratio exceeded the cap). In the same optimizer step: the critic-calibration loss on
the batch's `CriticExample`s and the PTX language-model loss on its curated sequences, each with
its weight and its own metric. `step` takes optional whole-batch totals (`BatchTotals`): a rank
of the data-parallel learner group (selfcritic/learner/group.py: Ray actors, FSDP2, MuonClip
all-reduces) steps on its slice of the batch but normalises by the whole batch's totals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from selfcritic.config import LearnerConfig, OptimConfig
from selfcritic.critic.examples import CriticExample
from selfcritic.learner.distributed import BatchTotals, split_batch
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.learner.losses import (
    LossScale,
    calibration_loss,
    get_loss,
    kl_k3,
    loss_normalisation,
    normalise,
    ptx_loss,
    truncated_is_share,
    truncated_is_weights,
)
from selfcritic.model.build import load_model
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.rollout.weights import to_checkpoint_names


@dataclass(frozen=True)
class PolicyBatch:
    """Sequences to learn from: token ids, sampling logprobs and one advantage each."""

    prompts: list[tuple[int, ...]]
    completions: list[tuple[int, ...]]
    old_logprobs: list[tuple[float, ...]]  # the engine's; () where it did not report them
    advantages: list[float]
    temperature: float
    max_new_tokens: int  # the generation budget (Dr. GRPO's normaliser)
    critic_examples: tuple[CriticExample, ...] = ()  # closed-loop calibration targets
    # curated (context ids, target ids) pairs for the PTX loss: only the targets are learned
    # (plain text is (first token, the rest))
    ptx_sequences: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
    # (token id, weight) of PTX target tokens that count other than 1 in its loss (the
    # nano world's verdict marks: env.corpus.mark_weight); the normaliser stays the number of
    # target tokens, so a weight adds emphasis and takes none from the other tokens
    ptx_token_weights: tuple[tuple[int, float], ...] = ()
    lr_scale: float = 1.0  # this step's factor on the optimizer's base rates (trainer.lr_schedule)
    # per completion, 1 where the model wrote the token and 0 where the environment did (a
    # trajectory's loss mask after its prompt); () : every completion token is the model's
    loss_masks: tuple[tuple[int, ...], ...] = ()
    # the learner's own logprobs of each completion before the batch's first optimizer step
    # (filled when a batch takes several: `learner.epochs`, `minibatches_per_epoch`); () : the
    # current weights' are the old policy's
    before_update: tuple[tuple[float, ...], ...] = ()


def token_weight_grid(next_ids: torch.Tensor, weights: dict[int, float]) -> torch.Tensor:
    """Each position's weight by the id of the token it predicts: `weights[id]`, else 1."""
    grid = torch.ones(next_ids.shape, dtype=torch.float32, device=next_ids.device)
    for token_id, weight in weights.items():
        grid[next_ids == token_id] = weight
    return grid


def update_plan(batch: PolicyBatch, epochs: int, minibatches: int) -> list[PolicyBatch]:
    """The optimizer steps of one batch, in order: its `minibatches` contiguous slices (policy
    sequences, critic examples and PTX pairs alike; an empty slice is skipped), `epochs` times."""
    parts = [
        part
        for part in split_batch(batch, minibatches)
        if part.prompts or part.critic_examples or part.ptx_sequences
    ]
    return [part for _ in range(epochs) for part in parts] or [batch]


def learn_planned(
    batch: PolicyBatch,
    epochs: int,
    minibatches: int,
    update: Callable[[PolicyBatch], dict[str, float]],
    own_logprobs: Callable[[PolicyBatch], list[tuple[float, ...]]],
) -> dict[str, float]:
    """Learn `batch` with `update` (one optimizer step each): once, or over the steps of
    `update_plan` from the old policy `own_logprobs` fixes before the first."""
    if len(update_plan(batch, epochs, minibatches)) == 1:
        return update(batch)
    batch = replace(batch, before_update=tuple(own_logprobs(batch)))
    return merge_updates([update(part) for part in update_plan(batch, epochs, minibatches)], epochs)


# step metrics averaged over a batch's optimizer steps (the rest: the last step's, or summed)
_AVERAGED = (
    "loss", "kl", "clip_fraction", "ratio_mean", "entropy", "tis_weight_mean",
    "tis_clipped_fraction", "logprob_diff_mean", "calibration_loss", "ptx_loss", "grad_norm",
)  # fmt: skip
_ADDED = ("micro_batches", "muonclip/heads_clipped")


def merge_updates(steps: list[dict[str, float]], epochs: int) -> dict[str, float]:
    """One metrics dict for a batch learned in several optimizer steps (`epochs` passes of
    equally many): averages, sums, maxima of the logit and the parity check, the last step's
    state; tokens are one epoch's; per epoch, its mean clip fraction and ratio
    (`learner/ratio_mean_epoch_<e>`: 1 at the batch's first step, away from 1 after it)."""
    merged = dict(steps[-1])
    for key in _AVERAGED:
        values = [m[key] for m in steps if key in m]
        if values:
            merged[key] = sum(values) / len(values)
    for key in _ADDED:
        if key in merged:
            merged[key] = sum(m.get(key, 0.0) for m in steps)
    for key in ("muonclip/max_logit", "logprob_diff_max"):
        values = [m[key] for m in steps if key in m]
        if values:
            merged[key] = max(values)
    per_epoch = len(steps) // epochs
    if "tokens" in merged:
        merged["tokens"] = sum(m.get("tokens", 0.0) for m in steps[:per_epoch])
    for epoch in range(epochs):
        chunk = steps[epoch * per_epoch : (epoch + 1) * per_epoch]
        for key in ("clip_fraction", "ratio_mean"):
            values = [m[key] for m in chunk if key in m and not math.isnan(m[key])]
            if values:
                merged[f"learner/{key}_epoch_{epoch + 1}"] = sum(values) / len(values)
    return merged | {"optimizer_steps": float(len(steps))}


def trust_engine_logprobs(
    setting: str, rollout_dtype: str, on_gpu: bool, learner_dtype: str = "auto"
) -> bool:
    """Resolve `learner.old_logprobs`: "auto" trusts the engine only where parity is verified
    (float32 engines and a float32 learner on CPU: about 1e-6); bfloat16 on either side, or
    GPUs, recompute."""
    if setting == "auto":
        return rollout_dtype == "float32" and learner_dtype != "bfloat16" and not on_gpu
    return setting == "engine"


def token_micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Row groups whose padded size (rows x longest) stays within `max_tokens`, rows taken in
    order of length so that short rows are padded with short ones (a warm-start batch mixes
    25-token answers with 100-token critic prompts: in row order half its tokens were padding)."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for row in sorted(range(len(lengths)), key=lengths.__getitem__):
        length = lengths[row]
        if current and (len(current) + 1) * max(longest, length) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(row)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


def engine_logprobs(
    reported: list[tuple[float, ...]], prompt_lengths: list[int], mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's logprobs laid out like the learner's (row i's completion starts at position
    prompt_lengths[i] - 1 of `mask`), and where they were reported (a bool tensor)."""
    engine = torch.zeros_like(mask, dtype=torch.float32)
    present = torch.zeros_like(mask, dtype=torch.bool)
    for i, (values, prompt_length) in enumerate(zip(reported, prompt_lengths, strict=True)):
        span = slice(prompt_length - 1, prompt_length - 1 + len(values))
        engine[i, span] = torch.tensor(values, dtype=torch.float32, device=mask.device)
        present[i, span] = True
    return engine, present & mask.bool()


class Learner:
    """Holds the trainable model, its optimizer and (with KL) the frozen reference."""

    def __init__(
        self,
        model_path: Path,
        cfg: LearnerConfig,
        optim_cfg: OptimConfig,
        trust_engine: bool,
        trust_remote_code: bool = False,
    ) -> None:
        self.cfg, self.trust_engine = cfg, trust_engine
        self.trust_remote_code = trust_remote_code  # model.trust_remote_code
        self.model = self._load_model(model_path, trainable=True)
        self.model.train()
        self.optimizer = build_muonclip(self.model, optim_cfg)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.max_grad_norm = optim_cfg.max_grad_norm
        self.loss_fn = get_loss(cfg.loss)
        self.pad_id = self.model.config.pad_token_id or 0
        self.device = next(self.model.parameters()).device  # every input goes here
        self.reference = None
        if cfg.kl_beta > 0:
            self.reference = self._load_model(model_path, trainable=False).eval()
            self.reference.requires_grad_(False)

    def _load_model(self, model_path: Path, trainable: bool) -> torch.nn.Module:
        """The policy (`trainable`) or the frozen reference; the group's ranks shard them."""
        return load_model(model_path, trust_remote_code=self.trust_remote_code)

    def step(self, batch: PolicyBatch) -> dict[str, float]:
        """Learn `batch`: one optimizer step, or with `learner.epochs` and
        `minibatches_per_epoch` the steps of `update_plan` from a fixed old policy."""
        cfg = self.cfg
        return learn_planned(
            batch, cfg.epochs, cfg.minibatches_per_epoch, self.update, self.own_logprobs
        )

    def update(self, batch: PolicyBatch, totals: BatchTotals | None = None) -> dict[str, float]:
        """Policy, calibration and PTX gradients over micro-batches, then one optimizer step.
        `totals`: the normalisers of the whole batch when `batch` is one rank's slice of it."""
        metrics = self._gradients(batch, totals or BatchTotals.of(batch))
        return self._optimizer_step(metrics, batch.lr_scale)

    def on_device(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """`tensors` (built on CPU from token lists) on the learner's device."""
        return tuple(tensor.to(self.device, non_blocking=True) for tensor in tensors)

    @contextmanager
    def unrecorded(self):
        """Forwards inside leave no trace in the step's QK-Clip maxima and router loads (they
        are not part of what the optimizer step learns from)."""
        capture, balancer = self.optimizer.capture, self.optimizer.balancer
        saved_maxima = dict(capture.max_logits) if capture is not None else None
        saved_loads = dict(balancer.loads)
        try:
            yield
        finally:
            if capture is not None:
                capture.max_logits = saved_maxima
            balancer.loads = saved_loads

    @torch.no_grad()
    def own_logprobs(self, batch: PolicyBatch) -> list[tuple[float, ...]]:
        """The current weights' logprob of every completion token of `batch` (no gradients,
        unrecorded)."""
        with self.unrecorded():
            return self._own_logprobs(batch)

    def _own_logprobs(self, batch: PolicyBatch) -> list[tuple[float, ...]]:
        lengths = [len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True)]
        found: dict[int, tuple[float, ...]] = {}
        for rows in token_micro_batches(lengths, self.cfg.max_tokens_per_micro_batch):
            prompts = [batch.prompts[r] for r in rows]
            completions = [batch.completions[r] for r in rows]
            ids, attention, _ = self.on_device(pad_batch(prompts, completions, self.pad_id))
            logprobs = token_logprobs(self.model, ids, attention, batch.temperature)
            for position, row in enumerate(rows):
                start = len(prompts[position]) - 1
                end = start + len(completions[position])
                found[row] = tuple(logprobs[position, start:end].tolist())
        return [found[row] for row in range(len(lengths))]

    def _gradients(self, batch: PolicyBatch, totals: BatchTotals) -> dict[str, float]:
        metrics = self._policy_terms(batch, totals) if batch.prompts else {}
        if batch.critic_examples and self.cfg.calibration_weight > 0:
            metrics["calibration_loss"] = self._calibration_term(batch.critic_examples, totals)
        if batch.ptx_sequences and self.cfg.ptx_weight > 0:
            metrics["ptx_loss"] = self._ptx_term(batch, totals)
        return metrics

    def _optimizer_step(self, metrics: dict[str, float], lr_scale: float) -> dict[str, float]:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * lr_scale
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        optimizer_metrics = self.optimizer.step()
        self.optimizer.zero_grad()
        return optimizer_metrics | metrics | {"grad_norm": float(grad_norm), "lr_scale": lr_scale}

    def _policy_terms(self, batch: PolicyBatch, totals: BatchTotals) -> dict[str, float]:
        lengths = [len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True)]
        scale = LossScale(
            total_sequences=totals.sequences,
            total_tokens=totals.tokens,
            max_new_tokens=batch.max_new_tokens,
            clip_eps=self.cfg.clip_eps,
            clip_eps_high=self.cfg.clip_eps_high,
            k2_tau=self.cfg.k2_tau,
        )
        keys = ("loss", "kl", "clip_fraction", "ratio_mean", "entropy", "tis_weight_mean")
        summed = dict.fromkeys(keys, 0.0)
        groups = token_micro_batches(lengths, self.cfg.max_tokens_per_micro_batch)
        for rows in groups:
            part = self._micro_step(batch, rows, scale)
            share = part.pop("tokens") / max(scale.total_tokens, 1)
            for key in ("loss", "kl"):  # already normalised by whole-batch totals
                summed[key] += part[key]
            for key in keys[2:]:  # token means: weight by this micro-batch's share of tokens
                # a loss that reports no clip_fraction or ratio_mean (a user's) leaves them NaN
                summed[key] += part.get(key, math.nan) * share
            if "tis_clipped_fraction" in part:  # only where TIS applies
                clipped = part["tis_clipped_fraction"] * share
                summed["tis_clipped_fraction"] = summed.get("tis_clipped_fraction", 0.0) + clipped
            if part["diff"] is not None:
                summed["logprob_diff_max"] = max(summed.get("logprob_diff_max", 0.0), part["diff"])
                # a mean over the whole batch's reported tokens (summed again over ranks)
                gap = part["diff_sum"] / max(totals.reported_tokens, 1)
                summed["logprob_diff_mean"] = summed.get("logprob_diff_mean", 0.0) + gap
        return summed | {"tokens": float(scale.total_tokens), "micro_batches": float(len(groups))}

    def _micro_step(self, batch: PolicyBatch, rows: list[int], scale: LossScale) -> dict:
        prompts = [batch.prompts[r] for r in rows]
        masks = [batch.loss_masks[r] for r in rows] if batch.loss_masks else None
        completions = [batch.completions[r] for r in rows]
        ids, attention, mask = self.on_device(pad_batch(prompts, completions, self.pad_id, masks))
        engine, reported = engine_logprobs(
            [batch.old_logprobs[r] for r in rows], [len(p) for p in prompts], mask
        )
        advantages = torch.tensor(
            [batch.advantages[r] for r in rows], dtype=torch.float32, device=self.device
        )
        logprobs, entropy = token_logprobs(
            self.model, ids, attention, batch.temperature, with_entropy=True
        )
        own = logprobs.detach()
        before = own  # the old policy's own logprobs: these weights, unless they have moved
        if batch.before_update:
            fixed = [batch.before_update[r] for r in rows]
            before = engine_logprobs(fixed, [len(p) for p in prompts], mask)[0]
        sampled = torch.where(reported, engine, before)  # unreported: the learner's own
        old = sampled if self.trust_engine else before
        weights, truncated = None, {}
        if not self.trust_engine and self.cfg.tis_cap is not None:
            weights = truncated_is_weights(old, sampled, self.cfg.tis_cap)
            cut = (truncated_is_share(old, sampled, self.cfg.tis_cap) * mask).sum()  # tokens
            truncated = {"tis_clipped_fraction": float(cut / mask.sum().clamp(min=1))}
        loss, stats = self.loss_fn(logprobs, old, advantages, mask, scale, token_weights=weights)
        kl = torch.zeros((), device=self.device)
        if self.reference is not None:
            with torch.no_grad():
                reference = token_logprobs(self.reference, ids, attention, batch.temperature)
            how = loss_normalisation(self.cfg.loss)  # the policy term's own
            kl = normalise(kl_k3(logprobs, reference), mask, how, scale)
            loss = loss + self.cfg.kl_beta * kl
        loss.backward()
        count = mask.sum().clamp(min=1)
        gap = (before - engine).abs() * reported
        return {
            "loss": float(loss.detach()),
            "kl": float(kl.detach()),
            **stats,
            "entropy": float((entropy * mask).sum() / count),
            "tis_weight_mean": float((weights * mask).sum() / count)
            if weights is not None
            else 1.0,
            **truncated,
            # engine vs learner on the same weights, over the tokens the engine reported
            "diff": float(gap.max()) if reported.any() else None,
            "diff_sum": float(gap.sum()),
            "tokens": int(mask.sum()),
        }

    def _calibration_term(self, examples: tuple[CriticExample, ...], totals: BatchTotals) -> float:
        """Backpropagate weight * calibration cross-entropy; returns the loss value."""
        total_weight = totals.calibration_weight
        lengths = [len(e.prompt_ids) for e in examples]
        value = 0.0
        for rows in token_micro_batches(lengths, self.cfg.max_tokens_per_micro_batch):
            chunk = [examples[r] for r in rows]
            logits = self._last_position_logits([e.prompt_ids for e in chunk])
            verdict_ids = torch.tensor([e.verdict_token_ids for e in chunk], device=self.device)
            loss = calibration_loss(
                logits.gather(-1, verdict_ids),  # [N, K]
                torch.tensor([e.target_probs for e in chunk], device=self.device),
                torch.tensor([e.weight for e in chunk], device=self.device),
                total_weight,
            )
            (self.cfg.calibration_weight * loss).backward()
            value += float(loss.detach())
        return value

    def _last_position_logits(self, prompts: list[tuple[int, ...]]) -> torch.Tensor:
        """[N, V] next-token logits after each prompt (right-padded batch)."""
        ids, attention, _ = self.on_device(pad_batch(prompts, [()] * len(prompts), self.pad_id))
        logits = self.model(input_ids=ids, attention_mask=attention, use_cache=False).logits
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        return logits[torch.arange(len(prompts)), last].float()

    def _ptx_term(self, batch: PolicyBatch, totals: BatchTotals) -> float:
        """Backpropagate weight * language-model loss on the targets of the batch's curated
        (context, target) pairs, tokens weighted by `ptx_token_weights`; returns its value."""
        sequences, total = batch.ptx_sequences, totals.ptx_tokens
        weights, value = dict(batch.ptx_token_weights), 0.0
        lengths = [len(context) + len(target) for context, target in sequences]
        for rows in token_micro_batches(lengths, self.cfg.max_tokens_per_micro_batch):
            chunk = [sequences[r] for r in rows]
            ids, attention, mask = self.on_device(
                pad_batch(
                    [context for context, _ in chunk], [target for _, target in chunk], self.pad_id
                )
            )
            mask = mask * token_weight_grid(ids[:, 1:], weights)
            loss = ptx_loss(token_logprobs(self.model, ids, attention, 1.0), mask, total)
            (self.cfg.ptx_weight * loss).backward()
            value += float(loss.detach())
        return value

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Weights and trained buffers under checkpoint names (what engines load)."""
        return to_checkpoint_names(self.model.state_dict())
