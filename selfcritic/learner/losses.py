"""Policy losses as pure tensor functions, found by name (`learner.loss`).

Every loss takes the learner's logprobs of the sampled tokens [B, T] (with grad), the old
policy's logprobs [B, T], one advantage per sequence [B], a mask of completion tokens [B, T] and
a `LossScale` holding the whole batch's totals, so that micro-batch losses add up exactly to the
full-batch loss however the batch is split. Each returns (loss, stats).

| name | per-token term | normaliser |
| --- | --- | --- |
| grpo | -min(r A, clip(r, 1-e, 1+e) A) | mean over each sequence's tokens, then over sequences |
| dr_grpo | the same | sum over tokens / (sequences x max new tokens), a constant (Dr. GRPO) |
| dapo | -min(r A, clip(r, 1-e_low, 1+e_high) A), clip-higher | mean over all tokens of the batch |
| ppo | the same with e_high = e_low | mean over all tokens of the batch |
| k2 | per sequence: (A - tau * sum_t log(pi/pi_old))^2, A = r - mean r | mean over sequences |

`kl_k3` is the k3 estimator of KL(pi || pi_ref) per token, exp(ref - logp) - (ref - logp) - 1;
the learner adds beta times it, normalised like the policy term. The PPO-family losses take
optional per-token `token_weights` (truncated importance sampling between the engine's and the
learner's old logprobs); Kimi's squared objective has no per-token term to weight and ignores
them. `calibration_loss` and `ptx_loss` are the critic-calibration and language-model terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from selfcritic.config import Config
from selfcritic.preflight import Problems, preflight_check, require_registered
from selfcritic.registry import Registry


@dataclass(frozen=True)
class LossScale:
    """Whole-batch quantities every micro-batch needs to normalise the same way."""

    total_sequences: int
    total_tokens: int
    max_new_tokens: int  # the generation budget (Dr. GRPO's constant)
    clip_eps: float = 0.2
    clip_eps_high: float = 0.28  # DAPO's upper clip
    k2_tau: float = 0.1  # K1.5/K2: weight of the log-ratio in the squared objective


PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
NORMALISATIONS = ("sequence", "constant", "token")  # see `normalise`


@dataclass(frozen=True)
class RegisteredLoss:
    """A policy loss and how its per-token terms are normalised: the learner normalises the KL
    term the same way, so the two are registered together."""

    fn: PolicyLoss
    normalisation: str


POLICY_LOSSES: Registry[RegisteredLoss] = Registry("policy loss")


def register_loss(name: str, normalisation: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator: register a policy loss under `name` with its normalisation (one of
    `NORMALISATIONS`); `learner.loss=name` then selects it, with or without KL."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")

    def decorate(fn: PolicyLoss) -> PolicyLoss:
        POLICY_LOSSES.register(name)(RegisteredLoss(fn, normalisation))
        return fn

    return decorate


def get_loss(name: str) -> PolicyLoss:
    return POLICY_LOSSES.get(name).fn


def loss_normalisation(name: str) -> str:
    return POLICY_LOSSES.get(name).normalisation


def _clipped_terms(logprobs, old_logprobs, advantages, low: float, high: float):
    """Per-token PPO terms [B, T] and whether clipping chose the term."""
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    adv = advantages.unsqueeze(1)  # [B, 1]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - low, 1 + high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    return per_token, ratio, (clipped < unclipped)


def _stats(ratio, was_clipped, mask) -> dict[str, float]:
    with torch.no_grad():
        count = mask.sum().clamp(min=1)
        return {
            "clip_fraction": float((was_clipped.float() * mask).sum() / count),
            "ratio_mean": float((ratio * mask).sum() / count),
        }


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B]: each sequence's mean over its completion tokens."""
    return (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def normalise(per_token: torch.Tensor, mask: torch.Tensor, how: str, scale: LossScale):
    """Reduce [B, T] per-token values to this micro-batch's share of the batch loss."""
    if how == "sequence":
        return sequence_mean(per_token, mask).sum() / scale.total_sequences
    if how == "constant":
        return (per_token * mask).sum() / (scale.total_sequences * scale.max_new_tokens)
    return (per_token * mask).sum() / max(scale.total_tokens, 1)  # "token"


def _ppo_family(name: str, normalisation: str, high_of):
    def loss(logprobs, old_logprobs, advantages, mask, scale: LossScale, token_weights=None):
        per_token, ratio, was_clipped = _clipped_terms(
            logprobs, old_logprobs, advantages, scale.clip_eps, high_of(scale)
        )
        if token_weights is not None:
            per_token = per_token * token_weights
        return normalise(per_token, mask, normalisation, scale), _stats(ratio, was_clipped, mask)

    loss.__name__ = f"{name}_loss"
    return register_loss(name, normalisation)(loss)


grpo_loss = _ppo_family("grpo", "sequence", lambda s: s.clip_eps)
dr_grpo_loss = _ppo_family("dr_grpo", "constant", lambda s: s.clip_eps)
dapo_loss = _ppo_family("dapo", "token", lambda s: s.clip_eps_high)
ppo_loss = _ppo_family("ppo", "token", lambda s: s.clip_eps)


@register_loss("k2", "sequence")
def k2_loss(logprobs, old_logprobs, advantages, mask, scale: LossScale, token_weights=None):
    """Kimi K1.5/K2: mean over samples of (r - mean r - tau * log(pi(y|x) / pi_old(y|x)))^2."""
    log_ratio = ((logprobs - old_logprobs) * mask).sum(dim=1)  # [B] whole-sequence log ratio
    per_sequence = (advantages - scale.k2_tau * log_ratio) ** 2  # [B]
    ratio = torch.exp(logprobs - old_logprobs)
    return per_sequence.sum() / scale.total_sequences, _stats(
        ratio, torch.zeros_like(mask, dtype=torch.bool), mask
    )


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """[B, T] k3 estimate of KL(pi || pi_ref) per sampled token (non-negative, unbiased)."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


def truncated_is_weights(old_logprobs, engine_logprobs, cap: float) -> torch.Tensor:
    """[B, T] min(pi_old / pi_engine, cap): corrects for sampling from the engine's numerics."""
    return torch.clamp(torch.exp(old_logprobs - engine_logprobs), max=cap).detach()


def truncated_is_share(old_logprobs, engine_logprobs, cap: float) -> torch.Tensor:
    """[B, T] 1.0 where `truncated_is_weights` cut the ratio pi_old / pi_engine down to `cap`."""
    return (old_logprobs - engine_logprobs > math.log(cap)).float()


def calibration_loss(
    verdict_logits: torch.Tensor,  # [N, K] logits of the K verdict tokens at the verdict position
    target_probs: torch.Tensor,  # [N, K]
    weights: torch.Tensor,  # [N]
    total_weight: float,
) -> torch.Tensor:
    """Weighted cross-entropy between the verdict distribution (softmax over the K verdict tokens)
    and the targets, divided by the whole batch's total weight."""
    per_example = -(target_probs * torch.log_softmax(verdict_logits, dim=-1)).sum(dim=-1)  # [N]
    return (weights * per_example).sum() / max(total_weight, 1e-12)


def ptx_loss(logprobs: torch.Tensor, mask: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Language-model loss: negative logprob of the curated tokens, over the batch's tokens."""
    return -(logprobs * mask).sum() / max(total_tokens, 1)


require_registered(POLICY_LOSSES, "learner.loss", __name__)


@preflight_check
def _micro_batch_holds_a_sequence(cfg: Config, problems: Problems) -> None:
    """`learner.max_tokens_per_micro_batch` holds a sequence of `rollout.max_model_len`."""
    learner = cfg.learner
    problems.require(
        learner.max_tokens_per_micro_batch >= cfg.rollout.max_model_len,
        "learner.max_tokens_per_micro_batch",
        f"must hold at least one sequence of rollout.max_model_len={cfg.rollout.max_model_len}",
    )
