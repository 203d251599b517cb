"""Held-out evaluation of any environment, in training (`eval.every`) and from the CLI.

An environment with its own suite (`evaluate(engine, tokenizer, seed)`: the nano world's) is
scored by it. Any other is scored here on its held-out split: `eval.samples` samples per prompt
at `eval.temperature` (the policy's `sampling.max_tokens` and stop strings, one turn), and
- `eval/verifier_mean`: the mean verifier score of the samples of prompts with a reference
  (NaN without any), with `eval/verifier_failed` the share that failed to be scored;
- `eval/pass_at_n`: the share of those prompts with at least one of their n = `eval.samples`
  samples scored 1 (pass@n, the unbiased estimator's value at k = n);
- `eval/greedy_mean`: the mean score of one greedy (temperature 0) answer per such prompt;
- `eval/response_tokens`, `eval/truncated_rate` and `eval/no_final_answer` (of the sampled
  answers; the last where the environment strips a reasoning block);
- with the critic on, its agreement with the verifier on (correct, wrong) pairs of these
  samples, its position consistency and invalid rate (selfcritic/eval/critic_quality.py);
- the environment's own rates of these episodes where it has `episode_metrics(prompts,
  groups)` (a hidden oracle's: the tool world's call rates, selfcritic/envs/tool_sums.py).
The verifier and the critic see each answer's final part (selfcritic/envs/reasoning.py).
In a mixture each part is evaluated on its own and its metrics are named `eval/<label>/...`.
Held-out episodes run as training's do (selfcritic/rollout/episodes.py): several turns with
observations for a multi-turn environment.
"""

from __future__ import annotations

import dataclasses
import inspect

from selfcritic.config import Config
from selfcritic.critic.judge import prompt_encoder
from selfcritic.envs.reasoning import answer_of
from selfcritic.eval.critic_quality import critic_on_held_out, critic_pairs
from selfcritic.rollout.episodes import observing_for, run_episodes
from selfcritic.rollout.types import SamplingSpec

DEFAULT_HEADLINE = ("eval/verifier_mean",)


def evaluate_environment(
    parts: dict, engine, tokenizer, cfg: Config, verifiers: dict, seed: int, final: bool = True
) -> dict[str, float]:
    """Every part's evaluation metrics ({label: environment} `parts`; `verifiers`: {label:
    VerifierPool or None}); `final`: a run's first or final evaluation (or a checkpoint's),
    passed to a suite whose `evaluate` takes it (it may measure more there)."""
    metrics: dict[str, float] = {}
    for label, env in parts.items():
        if hasattr(env, "evaluate"):
            takes_final = "final" in inspect.signature(env.evaluate).parameters
            extra = {"final": final} if takes_final else {}
            found = env.evaluate(engine, tokenizer, seed, **extra)
        else:
            found = held_out_metrics(env, engine, tokenizer, cfg, verifiers.get(label), seed)
        if len(parts) > 1:
            found = {f"eval/{label}/{k.removeprefix('eval/')}": v for k, v in found.items()}
        metrics |= found
    return metrics


def held_out_spec(cfg: Config, seed: int, stop_token_ids: tuple[int, ...] = ()) -> SamplingSpec:
    """How held-out prompts are sampled: `eval.samples` each at `eval.temperature`, the policy's
    token budget, stop strings and end-of-turn ids, no logprobs (scored by text)."""
    return SamplingSpec(
        n=cfg.eval.samples,
        temperature=cfg.eval.temperature,
        max_tokens=cfg.sampling.max_tokens,
        stop=tuple(cfg.sampling.stop),
        stop_token_ids=stop_token_ids,
        seed=seed,
        logprobs=False,
    )


def held_out_metrics(env, engine, tokenizer, cfg: Config, verifier, seed: int) -> dict[str, float]:
    """The generic metrics of `env`'s held-out split (`verifier`: a VerifierPool or None)."""
    encode = prompt_encoder(tokenizer, cfg.data.chat_template)
    if hasattr(env, "use_encoder"):  # as in training (a tool format that follows the template)
        env.use_encoder(encode)
    prompts = env.held_out()
    spec = held_out_spec(cfg, seed, encode.turn_stop_ids())
    groups = episodes(env, engine, prompts, encode, spec, cfg)
    samples = [s for group in groups for s in group]
    checked = [k for k, prompt in enumerate(prompts) if prompt.reference is not None]
    answers = [[answer_of(env, t) for t in group] for group in groups]
    metrics = env.episode_metrics(prompts, groups) if hasattr(env, "episode_metrics") else {}
    metrics |= {
        "eval/response_tokens": sum(len(s.completion_ids) for s in samples) / max(len(samples), 1),
        "eval/truncated_rate": sum(s.engine_finish == "length" for s in samples)
        / max(len(samples), 1),
        "eval/no_final_answer": sum(a is None for row in answers for a in row)
        / max(len(samples), 1),
    }
    if not checked or verifier is None:
        nan = float("nan")
        return metrics | {
            "eval/verifier_mean": nan,
            "eval/verifier_failed": 0.0,
            "eval/pass_at_n": nan,
            "eval/greedy_mean": nan,
        }
    greedy_spec = dataclasses.replace(spec, n=1, temperature=0.0)
    greedy = episodes(env, engine, [prompts[k] for k in checked], encode, greedy_spec, cfg)
    answers = [[a or "" for a in row] for row in answers]  # no final part: judged as ""
    jobs = [(a, prompts[k].reference) for k in checked for a in answers[k]]
    jobs += [
        (answer_of(env, group[0]) or "", prompts[k].reference)
        for k, group in zip(checked, greedy, strict=True)
    ]
    results, stats = verifier.score(jobs)
    scores = [r.score for r in results]
    sampled = len(checked) * spec.n
    metrics |= {
        "eval/verifier_mean": sum(scores[:sampled]) / sampled,
        "eval/verifier_failed": stats.failed / len(jobs),
        "eval/pass_at_n": pass_at_n(scores[:sampled], spec.n),
        "eval/greedy_mean": sum(scores[sampled:]) / len(checked),
    }
    if cfg.critic.enabled:
        rows = [scores[i * spec.n : (i + 1) * spec.n] for i in range(len(checked))]
        pairs = critic_pairs(
            [prompts[k].text for k in checked], [answers[k] for k in checked], rows, cfg, seed
        )
        metrics |= critic_on_held_out(pairs, engine, encode, tokenizer, cfg, seed)
    return metrics


def episodes(env, engine, prompts, encode, spec: SamplingSpec, cfg: Config):
    """`spec.n` episodes of each prompt, as training runs them (one engine call for a
    single-turn environment; turns and observations for a multi-turn one)."""
    ids = [encode(p.text, p.system, p.tools) for p in prompts]
    return run_episodes(
        engine, env, prompts, ids, spec, encode.observation, cfg.rollout.max_model_len,
        getattr(env, "max_turns", 1), observing_for(env, encode),
    )  # fmt: skip


def pass_at_n(scores: list[float], n: int) -> float:
    """The share of prompts (each `n` consecutive scores) with at least one score of 1."""
    groups = [scores[i : i + n] for i in range(0, len(scores), n)]
    return sum(any(score == 1.0 for score in group) for group in groups) / len(groups)


def headline(parts: dict, metrics: dict[str, float]) -> list[str]:
    """The metric keys the console shows after an evaluation: the environment's `headline`, or
    the verifier mean; each part's in a mixture."""
    keys = []
    for label, env in parts.items():
        for key in getattr(env, "headline", DEFAULT_HEADLINE):
            keys.append(key if len(parts) == 1 else f"eval/{label}/{key.removeprefix('eval/')}")
    return [key for key in keys if key in metrics]
