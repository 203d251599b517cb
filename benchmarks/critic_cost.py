"""What the self-critic costs next to the policy rollout, per step, on W1.

Workload W1 (shared/notes/benchmarks.md): the W1 model (vocabulary 512), 16 prompts
("Q: 123+456+789 =\\nA:"), 8 samples each of exactly 64 new tokens at temperature 1.0 (the
rollout); then the critic on those 16 groups of 8, nano rubric (2 aspects), the sampled schedule
(k = 2 comparisons per response: 8 pairs a group, both orders), prefix caching on, with
calibration ON: every group is treated as verifiable with half its samples verified right and
half wrong (a random model gets none right; the pattern makes calibration pairs exist, as in a
run), so calibration's pairs are judged too. Three critics:
- probability verdicts (the default), supervised calibration (1 pair a group);
- generative verdicts (`critic.max_tokens` 24, the nano experiment's), supervised calibration;
- the nano experiment's critic: generative, RL-form calibration, 4 pairs a group x 8 sampled
  verdicts per order.
The anchor set is off (it re-judges 16 pairs every 5 steps) and so is the gate (no probes). One
in-process vLLM engine (float32); the rollout and each critic alternate, `--repeats` rounds after
a warm-up, medians. Printed: critic prompts, tokens (prompt + generated) and seconds, each as a
ratio to the rollout's, with the CPU model and the load.

    .venv/bin/python benchmarks/critic_cost.py [--repeats 3] [--caching off]
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
    ArchConfig,
    CalibrationConfig,
    CriticConfig,
    ModelConfig,
    RolloutConfig,
)
from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
from selfcritic.critic.self_critic import SelfCritic
from selfcritic.model.build import prepare_model
from selfcritic.rollout.types import SamplingSpec

PROMPTS, SAMPLES, NEW_TOKENS, VOCAB = 16, 8, 64, 512
CRITICS = {
    "probability, supervised calibration": CriticConfig(verdict_mode="probability"),
    "generative, supervised calibration": CriticConfig(verdict_mode="generative", max_tokens=24),
    "nano experiment's: generative, RL calibration 4 x 8": CriticConfig(
        verdict_mode="generative",
        max_tokens=24,
        calibration=CalibrationConfig(form="rl", pairs_per_group=4, min_pairs=8, rl_samples=8),
    ),
}


def questions() -> list[str]:
    """W1's prompts: three three-digit operands, 19 characters."""
    rng = random.Random(0)
    out = []
    for _ in range(PROMPTS):
        a, b, c = (rng.randint(100, 999) for _ in range(3))
        out.append(f"Q: {a}+{b}+{c} =\nA:")
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def half_right(groups) -> list[list[float]]:
    """Each group's samples verified right and wrong in turn (calibration pairs exist)."""
    return [[float(i % 2 == 0) for i in range(len(group))] for group in groups]


def critic_for(cfg: CriticConfig, encode, verdicts) -> SelfCritic:
    cfg = dataclasses.replace(cfg, rubric="nano", schedule="sampled", comparisons_per_response=2)
    cfg.anchor = AnchorConfig(size=0)
    return SelfCritic(cfg, load_rubric("nano"), encode, verdicts, context_len=256)


def measure(engine, critics: dict[str, SelfCritic], encode, repeats: int) -> dict:
    """Median seconds, and the tokens (prompt + generated, calibration's included) and rubric
    verdicts of the first timed round, per critic."""
    prompts = [encode(q) for q in questions()]
    spec = SamplingSpec(n=SAMPLES, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, seed=0)
    rows: dict[str, list] = {"rollout": []} | {name: [] for name in critics}
    for round_ in range(repeats + 1):
        seconds, groups = timed(lambda: engine.generate(prompts, spec))  # noqa: B023
        tokens = sum(len(p) + NEW_TOKENS * SAMPLES for p in prompts)
        if round_:
            rows["rollout"].append((seconds, tokens, len(prompts)))
        for name, critic in critics.items():
            seconds, result = timed(
                lambda c=critic, g=groups, r=round_: c.score(
                    questions(), g, engine, seed=r, verified=half_right(g), step=r + 1
                )
            )
            spent = result.prompt_tokens + result.completion_tokens
            if round_:  # round 0 warms up
                rows[name].append((seconds, spent, 2 * len(result.judged)))
    return {
        name: (statistics.median(r[0] for r in rs), rs[0][1], rs[0][2]) for name, rs in rows.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caching", choices=["on", "off"], default="on")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from selfcritic.rollout.vllm_engine import VLLMEngine

    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    path = prepare_model(ModelConfig(preset="w1", arch=ArchConfig(vocab_size=VOCAB)), cache)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    encode = prompt_encoder(tokenizer)
    verdicts = verdict_token_ids(tokenizer, ("X", "Y"))
    critics = {name: critic_for(cfg, encode, verdicts) for name, cfg in CRITICS.items()}
    rollout = dataclasses.replace(
        RolloutConfig(), prefix_caching=args.caching == "on", max_model_len=256, in_process=True
    )
    engine = VLLMEngine(path, rollout)
    before = describe()
    try:
        rows = measure(engine, critics, encode, args.repeats)
    finally:
        engine.shutdown()
    print(f"start: {before}\nend:   {describe()}")
    print(
        f"W1 ({PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} tokens), sampled schedule "
        f"k=2, calibration on, prefix caching {args.caching}; medians of {args.repeats} rounds"
    )
    rollout_s, rollout_tokens, _ = rows.pop("rollout")
    print("| work | rubric verdicts | tokens (x rollout) | seconds (x rollout) |")
    print("| --- | --- | --- | --- |")
    print(f"| rollout | - | {rollout_tokens:,} | {rollout_s:.2f} |")
    for name, (seconds, tokens, prompts) in rows.items():
        print(
            f"| critic: {name} | {prompts:,} | {tokens:,} ({tokens / rollout_tokens:.1f} x) | "
            f"{seconds:.2f} ({seconds / rollout_s:.2f} x) |"
        )


if __name__ == "__main__":
    main()
