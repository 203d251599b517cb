"""The cost of the distributed learner path: FSDP2 ranks in Ray actors against one process.

One learner step (GRPO, engine logprobs trusted, MuonClip with the default settings) on the same
W1-shaped batch (128 sequences: 20 prompt tokens + 64 completion tokens, 84 in all) on the nano
model, three ways, the rounds alternating so that drift in the shared machine's speed hits all
three alike:
  - group2: `LearnerGroup`, 2 FSDP2 ranks (Ray actors) of 1 torch thread each, gloo;
  - group1: `LearnerGroup`, 1 FSDP2 rank of 2 threads;
  - plain:  the `Learner` in the driver process, 2 threads (no Ray, no FSDP2).
Times are the driver's wall clock around `step` (batch transfer to the actors included). The
first step of each is a warm-up and is not counted. On a 2-core machine this measures the
overhead of the distributed path (collectives, gathered Newton-Schulz, Ray), not scaling.

    .venv/bin/python benchmarks/learner_group.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from selfcritic.config import LearnerConfig, ModelConfig, OptimConfig
from selfcritic.learner.learner import Learner, PolicyBatch
from selfcritic.model.build import prepare_model

PROMPTS, SAMPLES, PROMPT_TOKENS, NEW_TOKENS = 16, 8, 20, 64


def w1_batch(vocab: int) -> PolicyBatch:
    generator = torch.Generator().manual_seed(0)
    rows = PROMPTS * SAMPLES
    prompts = [
        (1, *torch.randint(3, vocab, (PROMPT_TOKENS - 1,), generator=generator).tolist())
        for _ in range(PROMPTS)
    ]
    return PolicyBatch(
        prompts=[prompts[row // SAMPLES] for row in range(rows)],
        completions=[
            tuple(torch.randint(3, vocab, (NEW_TOKENS,), generator=generator).tolist())
            for _ in range(rows)
        ],
        old_logprobs=[
            tuple((-4.6 + 0.1 * torch.randn(NEW_TOKENS, generator=generator)).tolist())
            for _ in range(rows)
        ],
        advantages=torch.randn(rows, generator=generator).tolist(),
        temperature=1.0,
        max_new_tokens=NEW_TOKENS,
    )


def timed_step(learner, batch: PolicyBatch) -> float:
    start = time.perf_counter()
    learner.step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)

    import ray

    from selfcritic.learner.group import LearnerGroup

    path = prepare_model(ModelConfig(), Path(tempfile.gettempdir()) / "selfcritic-bench")
    # 4 logical CPUs: both groups stay alive (idle actors use no CPU) on the 2 real cores
    ray.init(num_cpus=4, include_dashboard=False)
    torch.set_num_threads(2)
    optim = OptimConfig()
    learners = {
        "group2": LearnerGroup(
            path, LearnerConfig(world_size=2, threads_per_rank=1), optim, trust_engine=True
        ),
        "group1": LearnerGroup(
            path,
            LearnerConfig(world_size=1, cpus_per_rank=2, threads_per_rank=2),
            optim,
            trust_engine=True,
        ),
        "plain": Learner(path, LearnerConfig(), optim, trust_engine=True),
    }
    batch = w1_batch(vocab=100)
    times: dict[str, list[float]] = {name: [] for name in learners}
    try:
        for round_ in range(args.repeats + 1):
            for name, learner in learners.items():
                seconds = timed_step(learner, batch)
                if round_ > 0:  # round 0 warms up
                    times[name].append(seconds)
    finally:
        for learner in learners.values():
            if isinstance(learner, LearnerGroup):
                learner.shutdown()
        ray.shutdown()

    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"nano model, {len(batch.prompts)} sequences x 84 tokens ({tokens} tokens), "
        f"{args.repeats} rounds"
    )
    for name, values in times.items():
        runs = " ".join(f"{v:.2f}" for v in values)
        print(
            f"  {name:7s} median {medians[name]:.3f} s ({tokens / medians[name]:,.0f} tokens/s)"
            f"  runs: {runs}"
        )
    print(
        f"  group2 / group1 = {medians['group2'] / medians['group1']:.2f}"
        "  (2 ranks x 1 thread vs 1 rank x 2 threads)"
    )
    print(
        f"  group1 / plain  = {medians['group1'] / medians['plain']:.2f}"
        "  (a 1-rank FSDP2 actor vs the driver-process Learner)"
    )
    print(f"  group2 / plain  = {medians['group2'] / medians['plain']:.2f}")


if __name__ == "__main__":
    main()
