"""Held-out evaluation of any environment, in training (`eval.every`) and from the CLI.

An environment with its own suite (`evaluate(engine, tokenizer, seed)`: the nano world's) is
scored by it. Any other is scored here on its held-out split: `eval.samples` samples per prompt
at `eval.temperature` (the policy's `sampling.max_tokens` and stop strings, one turn), and
- `eval/verifier_mean`: the mean verifier score of the samples of prompts with a reference
  (NaN without any), with `eval/verifier_failed` the share that failed to be scored;
- `eval/response_tokens` and `eval/truncated_rate`.
In a mixture each part is evaluated on its own and its metrics are named `eval/<label>/...`.
Left out: multi-turn held-out episodes (the agentic issue) and the critic on generic splits.
"""

from __future__ import annotations

from selfcritic.config import Config
from selfcritic.critic.judge import prompt_encoder
from selfcritic.rollout.types import SamplingSpec

DEFAULT_HEADLINE = ("eval/verifier_mean",)


def evaluate_environment(
    parts: dict, engine, tokenizer, cfg: Config, verifiers: dict, seed: int
) -> dict[str, float]:
    """Every part's evaluation metrics ({label: environment} `parts`; `verifiers`: {label:
    VerifierPool or None})."""
    metrics: dict[str, float] = {}
    for label, env in parts.items():
        if hasattr(env, "evaluate"):
            found = env.evaluate(engine, tokenizer, seed)
        else:
            found = held_out_metrics(env, engine, tokenizer, cfg, verifiers.get(label), seed)
        if len(parts) > 1:
            found = {f"eval/{label}/{k.removeprefix('eval/')}": v for k, v in found.items()}
        metrics |= found
    return metrics


def held_out_spec(cfg: Config, seed: int) -> SamplingSpec:
    """How held-out prompts are sampled: `eval.samples` each at `eval.temperature`, the policy's
    token budget and stop strings, no logprobs (scored by text)."""
    return SamplingSpec(
        n=cfg.eval.samples,
        temperature=cfg.eval.temperature,
        max_tokens=cfg.sampling.max_tokens,
        stop=tuple(cfg.sampling.stop),
        seed=seed,
        logprobs=False,
    )


def held_out_metrics(env, engine, tokenizer, cfg: Config, verifier, seed: int) -> dict[str, float]:
    """The generic metrics of `env`'s held-out split (`verifier`: a VerifierPool or None)."""
    prompts = env.held_out()
    encode = prompt_encoder(tokenizer)
    groups = engine.generate([encode(p.text) for p in prompts], held_out_spec(cfg, seed))
    samples = [s for group in groups for s in group]
    jobs = [
        (sample.text, prompt.reference)
        for prompt, group in zip(prompts, groups, strict=True)
        if prompt.reference is not None
        for sample in group
    ]
    scores, failed = [], 0.0
    if jobs and verifier is not None:
        results, stats = verifier.score(jobs)
        scores, failed = [r.score for r in results], stats.failed / len(jobs)
    return {
        "eval/verifier_mean": sum(scores) / len(scores) if scores else float("nan"),
        "eval/verifier_failed": failed,
        "eval/response_tokens": sum(len(s.completion_ids) for s in samples) / max(len(samples), 1),
        "eval/truncated_rate": sum(s.finish_reason == "length" for s in samples)
        / max(len(samples), 1),
    }


def headline(parts: dict, metrics: dict[str, float]) -> list[str]:
    """The metric keys the console shows after an evaluation: the environment's `headline`, or
    the verifier mean; each part's in a mixture."""
    keys = []
    for label, env in parts.items():
        for key in getattr(env, "headline", DEFAULT_HEADLINE):
            keys.append(key if len(parts) == 1 else f"eval/{label}/{key.removeprefix('eval/')}")
    return [key for key in keys if key in metrics]
