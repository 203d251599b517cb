"""W1 rollout and weight sync: selfcritic's vLLM engine against plain transformers, same run.

Workload W1 (shared/notes/benchmarks.md): the W1 DeepseekV3 (4.8M parameters, vocabulary 512),
16 prompts of 20 tokens, 8 samples each, exactly 64 new tokens, temperature 1.0, float32:
8,192 generated tokens per call, with the sampled tokens' logprobs (what RL needs).
Peers, measured here in the same process:
- generation: transformers `generate` (what TRL uses without vLLM), with output scores on;
- weight sync: a plain clone of the same tensors (the floor of any in-memory copy).
The transformers peer runs first, because vLLM's CPU worker pins this process's threads.

    .venv/bin/python benchmarks/w1_rollout.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from selfcritic.config import ArchConfig, ModelConfig, RolloutConfig
from selfcritic.model.build import load_model, prepare_model
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import serialize, to_checkpoint_names

PROMPTS, SAMPLES, NEW_TOKENS, PROMPT_TOKENS = 16, 8, 64, 20


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


def transformers_generate(model, prompts):
    ids = torch.tensor(prompts).repeat_interleave(SAMPLES, dim=0)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
        )
    assert out.sequences.shape[1] == PROMPT_TOKENS + NEW_TOKENS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    path = prepare_model(ModelConfig(preset="w1", arch=ArchConfig(vocab_size=512)), cache)
    prompts, tokens = w1_prompts(), PROMPTS * SAMPLES * NEW_TOKENS

    model = load_model(path).eval()
    peer_gen = median_seconds(lambda: transformers_generate(model, prompts), args.repeats)
    state = model.state_dict()
    peer_copy = median_seconds(lambda: {k: v.clone() for k, v in state.items()}, args.repeats)

    from selfcritic.rollout.vllm_engine import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine(path, RolloutConfig())
    startup = time.perf_counter() - start
    spec = SamplingSpec(n=SAMPLES, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    ours_gen = median_seconds(lambda: engine.generate(prompts, spec), args.repeats)
    ours_sync = median_seconds(
        lambda: engine.update_weights(serialize(to_checkpoint_names(state)), 1), args.repeats
    )
    engine.shutdown()

    print(f"W1 on {torch.get_num_threads()} torch threads, medians of {args.repeats} runs")
    print(f"{'measurement':44s} {'selfcritic':>12s} {'peer':>12s} {'ratio':>7s}")
    rows = [
        ("generation tokens/s (vLLM vs transformers)", tokens / ours_gen, tokens / peer_gen),
        ("weight sync s (in-place load vs clone)", ours_sync, peer_copy),
    ]
    for name, ours, peer in rows:
        print(f"{name:44s} {ours:12.3f} {peer:12.3f} {ours / peer:7.2f}")
    print(f"vLLM engine start-up (in-process): {startup:.1f} s")


if __name__ == "__main__":
    main()
