"""Critic schedules and prefix caching: what all pairs and the sampled schedule cost next to the
policy rollout, per step, on the nano model (the critic on W1's shape, calibration on, is
benchmarks/critic_cost.py).

Workload: 4 nano arithmetic prompts ("Q: a+b=\\nA:"), n samples each of exactly 16 new tokens at
temperature 1.0 (the rollout), then the critic on those groups with the nano rubric (2 aspects),
probability verdicts, both orders, calibration off: all pairs (n(n-1)/2 per group) against the
sampled schedule (k = 2 comparisons per response, n pairs per group), with the engine's prefix
caching on and off. One bare in-process vLLM engine (float32) per caching setting; rollout and
critic calls alternate, medians of `--repeats`. Printed: critic prompts, critic tokens (prompt +
generated) and seconds, each as a ratio to the rollout's.

    .venv/bin/python benchmarks/critic_schedules.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe

from rewards.registry import load_rubric
from selfcritic.config import (
    AnchorConfig,
    CalibrationConfig,
    CriticConfig,
    ModelConfig,
    RolloutConfig,
)
from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
from selfcritic.critic.self_critic import SelfCritic
from selfcritic.model.build import prepare_model
from selfcritic.rollout.types import SamplingSpec

PROMPTS, NEW_TOKENS = 4, 16
GROUP_SIZES = (4, 8, 16)
SCHEDULES = (("all pairs", "all", 2), ("sampled k=2", "sampled", 2))


def questions() -> list[str]:
    rng = random.Random(0)
    return [f"Q: {rng.randint(0, 9)}+{rng.randint(0, 9)}=\nA:" for _ in range(PROMPTS)]


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(engine, encode, critic_for, n: int, repeats: int) -> dict:
    """Median rollout and critic seconds for groups of n, per schedule, alternating."""
    prompts = [encode(q) for q in questions()]
    spec = SamplingSpec(n=n, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, seed=0)
    rows: dict[str, list] = {"rollout": []} | {name: [] for name, _, _ in SCHEDULES}
    engine.generate(prompts[:1], spec)  # warm-up
    for repeat in range(1, repeats + 1):
        seconds, groups = timed(lambda: engine.generate(prompts, spec))  # noqa: B023
        rollout_tokens = sum(len(p) + NEW_TOKENS * n for p in prompts)
        rows["rollout"].append((seconds, rollout_tokens, len(prompts)))
        for name, mode, k in SCHEDULES:
            critic = critic_for(mode, k)
            seconds, result = timed(
                lambda c=critic, g=groups, r=repeat: c.score(questions(), g, engine, seed=r)
            )
            tokens = result.prompt_tokens + result.completion_tokens
            rows[name].append((seconds, tokens, 2 * len(result.judged)))
    return {
        name: (statistics.median(r[0] for r in rs), rs[0][1], rs[0][2]) for name, rs in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(GROUP_SIZES))
    parser.add_argument("--caching", choices=["both", "on", "off"], default="both")
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    from transformers import AutoTokenizer

    from selfcritic.rollout.vllm_engine import VLLMEngine

    path = prepare_model(ModelConfig(), Path(tempfile.gettempdir()) / "selfcritic-bench")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    encode = prompt_encoder(tokenizer)
    verdicts = verdict_token_ids(tokenizer, ("X", "Y"))
    rubric = load_rubric("nano")

    def critic_for(mode: str, k: int) -> SelfCritic:
        cfg = CriticConfig(
            schedule=mode,
            comparisons_per_response=k,
            calibration=CalibrationConfig(enabled=False),
            anchor=AnchorConfig(size=0),
        )
        return SelfCritic(cfg, rubric, encode, verdicts)

    results = {}
    settings = {"both": (True, False), "on": (True,), "off": (False,)}[args.caching]
    for caching in settings:
        cfg = dataclasses.replace(RolloutConfig(), prefix_caching=caching, max_model_len=256)
        engine = VLLMEngine(path, cfg)
        for n in args.sizes:
            results[caching, n] = measure(engine, encode, critic_for, n, args.repeats)
        engine.shutdown()

    print(f"nano, {PROMPTS} prompts x n samples x {NEW_TOKENS} tokens; medians of {args.repeats}")
    header = "  n  prefix cache  schedule      prompts  tokens (x rollout)  seconds (x rollout)"
    print(header)
    for (caching, n), rows in results.items():
        rollout_s, rollout_tokens, _ = rows["rollout"]
        print(
            f"{n:3d}  {'on ' if caching else 'off'}           rollout       "
            f"{PROMPTS:7d}  {rollout_tokens:6d}             {rollout_s:6.2f}"
        )
        for name, _, _ in SCHEDULES:
            seconds, tokens, prompts = rows[name]
            print(
                f"{n:3d}  {'on ' if caching else 'off'}           {name:12s}  {prompts:7d}  "
                f"{tokens:6d} ({tokens / rollout_tokens:5.1f} x)  {seconds:6.2f} "
                f"({seconds / rollout_s:5.2f} x)"
            )


if __name__ == "__main__":
    main()
