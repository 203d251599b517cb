"""Rollout and weight sync on W1: the pool against a bare vLLM engine and the transformers engine,
and weight sync against a plain copy of the same bytes, measured in one run.

Workload W1 (shared/notes/benchmarks.md): the W1 DeepseekV3 (4.8M parameters, vocabulary 512),
16 prompts of 20 tokens, 8 samples each, exactly 64 new tokens at temperature 1.0, float32, with
the sampled tokens' logprobs: 8,192 generated tokens per call. Engines:
- transformers: `TransformersEngine` (generate) in this process;
- bare vLLM: `VLLMEngine` in this process (no Ray);
- pool: `RolloutPool` with one engine in a Ray actor (what the trainer uses).
Weight sync, for W1 and for the ~100M `small` preset: the trainer's path (fused experts to
checkpoint names, buckets into Ray's object store, in-place load into the engine, MoE repack),
against cloning the same state in memory; and as a share of an RL step (generation + learner
forward/backward + MuonClip step + sync, all measured here).

    .venv/bin/python benchmarks/rollout.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from selfcritic.config import ArchConfig, ModelConfig, OptimConfig, RayConfig, RolloutConfig
from selfcritic.model.build import load_model, prepare_model
from selfcritic.model.presets import load_preset
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import to_checkpoint_names

PROMPTS, SAMPLES, NEW_TOKENS, PROMPT_TOKENS = 16, 8, 64, 20
SPEC = SamplingSpec(n=SAMPLES, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)


def w1_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(3, 100, (PROMPTS, PROMPT_TOKENS - 1), generator=generator)
    return [[1, *row.tolist()] for row in body]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of two callables timed in turn, so that both see the same machine load
    (on a shared 2-core machine, back-to-back blocks drift by tens of percent)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def learner_step_seconds(path: Path, batch: int, repeats: int) -> float:
    """Forward + backward + MuonClip step on `batch` sequences of 84 tokens."""
    model = load_model(path).train()
    optimizer = build_muonclip(model, OptimConfig())
    ids = torch.randint(3, 100, (batch, PROMPT_TOKENS + NEW_TOKENS))

    def step():
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return median_seconds(step, repeats)


def sync_seconds(pool, model, repeats: int) -> tuple[float, float]:
    """(trainer's sync path, plain clone of the same checkpoint-named state)."""
    state = to_checkpoint_names(model.state_dict())
    sync = median_seconds(
        lambda: pool.update_weights(to_checkpoint_names(model.state_dict())), repeats
    )
    copy = median_seconds(lambda: {k: v.clone() for k, v in state.items()}, repeats)
    return sync, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    import ray

    from selfcritic.cluster import start_ray
    from selfcritic.rollout.hf_engine import TransformersEngine
    from selfcritic.rollout.pool import RolloutPool
    from selfcritic.rollout.vllm_engine import VLLMEngine

    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    w1 = prepare_model(ModelConfig(preset="w1", arch=ArchConfig(vocab_size=512)), cache)
    small = prepare_model(load_preset("small"), cache)
    prompts, tokens = w1_prompts(), PROMPTS * SAMPLES * NEW_TOKENS

    learn_w1 = learner_step_seconds(w1, PROMPTS * SAMPLES, args.repeats)
    learn_small = learner_step_seconds(small, 16, 1)
    hf = TransformersEngine(w1, RolloutConfig(engine="transformers"))
    hf_gen = median_seconds(lambda: hf.generate(prompts, SPEC), args.repeats)
    hf.shutdown()

    start_ray(RayConfig(num_cpus=2))
    pool = RolloutPool(w1, RolloutConfig(num_engines=1))
    sync_w1, copy_w1 = sync_seconds(pool, load_model(w1), args.repeats)
    bare = VLLMEngine(w1, RolloutConfig())  # after the learner: vLLM pins this process's threads
    pool_gen, bare_gen = alternating_medians(
        lambda: pool.generate(prompts, SPEC), lambda: bare.generate(prompts, SPEC), args.repeats
    )
    bare.shutdown()
    pool.shutdown()
    pool = RolloutPool(small, RolloutConfig(num_engines=1))
    sync_small, copy_small = sync_seconds(pool, load_model(small), args.repeats)
    pool.shutdown()
    ray.shutdown()

    print(f"W1, medians of {args.repeats}; tokens/s of {tokens:,}-token calls")
    print(
        f"  pool (Ray actor)   {tokens / pool_gen:8.0f}  = {bare_gen / pool_gen:.2f} x bare vLLM"
        f"  (overhead {pool_gen / bare_gen - 1:+.1%})"
    )
    print(f"  bare vLLM          {tokens / bare_gen:8.0f}")
    print(f"  transformers       {tokens / hf_gen:8.0f}  (pool = {hf_gen / pool_gen:.2f} x)")
    for name, sync, copy, learn, gen in (
        ("W1", sync_w1, copy_w1, learn_w1, pool_gen),
        ("small", sync_small, copy_small, learn_small, pool_gen),
    ):
        step = gen + learn + sync
        print(
            f"  sync {name:6s} {sync:7.3f} s vs copy {copy:6.3f} s = {sync / copy:5.1f} x;"
            f" {sync / step:5.1%} of an RL step of {step:.2f} s"
        )


if __name__ == "__main__":
    main()
