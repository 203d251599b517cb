"""The real bfloat16 mismatch between engine and learner logprobs on this CPU (issue 36, item 4).

Workload W1 (shared/notes/benchmarks.md): the W1 DeepseekV3 (random init, seed 0, vocabulary
512), 16 prompts of 20 tokens, 8 samples each, exactly 64 new tokens at temperature 1.0: 8,192
sampled tokens per engine. The samples are drawn twice with vLLM in this process (`VLLMEngine`,
the trainer's engine: processed logprobs, AMX MLA backend for bfloat16), once with
`rollout.dtype=float32` and once with bfloat16; the learner's logprobs of each set are
computed by the real learner (`ShardedLearner`, FSDP2 at world size 1 in a one-process gloo
group) with `learner.compute_dtype` float32 and bfloat16 (float32 master weights). For each
(engine dtype, learner dtype) pair, with gap = engine - learner per sampled token:
- mean, p99 and max |gap|;
- the truncated importance-sampling weight min(pi_learner / pi_engine, cap) at the default cap
  (`learner.tis_cap`): its mean and the share of tokens whose ratio was truncated;
- the sequence-level ratio pi_learner / pi_engine of whole completions (exp of the summed
  per-token log-ratio): the standard deviation of its log, and its 1st and 99th percentiles;
- the learner's own step metrics on the same batch (`learner/logprob_diff_mean`,
  `tis_weight_mean`, `tis_clipped_fraction`), read from one real gradient pass, as a check that
  what the trainer logs is what is measured here.
Left out: GPUs (the GPU device check measures them), trained weights (a random-init model
samples from a nearly flat distribution: `--model` takes a trained checkpoint instead).

    .venv/bin/python benchmarks/bf16_logprobs.py [--model CHECKPOINT_DIR]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from selfcritic.config import ArchConfig, LearnerConfig, ModelConfig, OptimConfig, RolloutConfig
from selfcritic.learner.distributed import BatchTotals
from selfcritic.learner.learner import PolicyBatch
from selfcritic.model.build import prepare_model
from selfcritic.rollout.types import SamplingSpec

PROMPTS, SAMPLES, NEW_TOKENS, PROMPT_TOKENS = 16, 8, 64, 20
SPEC = SamplingSpec(
    n=SAMPLES, temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=True, seed=0
)
DTYPES = ("float32", "bfloat16")


def w1_prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(3, 100, (PROMPTS, PROMPT_TOKENS - 1), generator=generator)
    return [[1, *row.tolist()] for row in body]


def sample(path: Path, dtype: str) -> PolicyBatch:
    """W1's batch sampled by a vLLM engine in `dtype`, with its logprobs."""
    from selfcritic.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(path, RolloutConfig(dtype=dtype))
    try:
        groups = engine.generate(w1_prompts(), SPEC)
    finally:
        engine.shutdown()
    samples = [s for group in groups for s in group]
    assert all(len(s.logprobs) == NEW_TOKENS for s in samples)
    generator = torch.Generator().manual_seed(1)
    return PolicyBatch(
        prompts=[s.prompt_ids for s in samples],
        completions=[s.completion_ids for s in samples],
        old_logprobs=[s.logprobs for s in samples],
        advantages=torch.randn(len(samples), generator=generator).tolist(),
        temperature=SPEC.temperature,
        max_new_tokens=NEW_TOKENS,
    )


def gap_figures(engine: torch.Tensor, learner: torch.Tensor, cap: float) -> dict[str, float]:
    """[N, T] engine and learner logprobs of the same tokens: the figures of the docstring."""
    gap = (engine - learner).abs().flatten().double()
    log_ratio = (learner - engine).double()  # log pi_learner / pi_engine per token
    weights = log_ratio.exp().clamp(max=cap)
    sequence = log_ratio.sum(dim=1)  # [N]
    return {
        "mean": float(gap.mean()),
        "p99": float(torch.quantile(gap, 0.99)),
        "max": float(gap.max()),
        "tis_mean": float(weights.mean()),
        "truncated": float((log_ratio > math.log(cap)).double().mean()),
        "seq_log_std": float(sequence.std()),
        "seq_p01": float(torch.quantile(sequence, 0.01).exp()),
        "seq_p99": float(torch.quantile(sequence, 0.99).exp()),
    }


def learner_figures(learner, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The learner's logprobs of `batch` [N, T], and its own step metrics on it (one gradient
    pass; the gradients are dropped, no optimizer step)."""
    own = torch.tensor(learner.own_logprobs(batch))
    metrics = learner._gradients(batch, BatchTotals.of(batch))
    learner.optimizer.zero_grad()
    return own, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a Hugging Face checkpoint directory instead of W1 (e.g. the nano world's cached "
        "warm-start, ~/.cache/selfcritic/warmstart/HASH/model: W1's architecture, trained)",
    )
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    import torch.distributed as dist

    from selfcritic.learner.sharded import ShardedLearner

    started = time.perf_counter()
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    w1 = args.model or prepare_model(
        ModelConfig(preset="w1", arch=ArchConfig(vocab_size=512)), cache
    )
    print(f"model: {w1}")
    batches = {dtype: sample(w1, dtype) for dtype in DTYPES}
    sampled_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as rendezvous:
        dist.init_process_group(
            "gloo", init_method=f"file://{rendezvous}/store", rank=0, world_size=1
        )
        try:
            rows = []
            for learner_dtype in DTYPES:
                cfg = LearnerConfig(compute_dtype=learner_dtype)
                learner = ShardedLearner(w1, cfg, OptimConfig(), trust_engine=False)
                for engine_dtype in DTYPES:
                    batch = batches[engine_dtype]
                    own, metrics = learner_figures(learner, batch)
                    engine = torch.tensor(batch.old_logprobs)
                    figures = gap_figures(engine, own, cfg.tis_cap)
                    rows.append((engine_dtype, learner_dtype, figures, metrics))
                del learner
        finally:
            dist.destroy_process_group()
    cap = LearnerConfig().tis_cap
    tokens = PROMPTS * SAMPLES * NEW_TOKENS
    print(f"{tokens:,} sampled tokens per engine dtype, temperature 1.0, tis_cap {cap:g}")
    print(
        f"{'engine':>9} {'learner':>9} | {'mean|gap|':>9} {'p99':>9} {'max':>9} |"
        f" {'TIS mean':>8} {'trunc.':>7} | {'seq sd(log r)':>13} {'r p1':>6} {'r p99':>6} |"
        f" learner metrics: diff_mean, tis_mean, tis_clipped"
    )
    for engine_dtype, learner_dtype, f, m in rows:
        print(
            f"{engine_dtype:>9} {learner_dtype:>9} | {f['mean']:9.2e} {f['p99']:9.2e}"
            f" {f['max']:9.2e} | {f['tis_mean']:8.4f} {f['truncated']:7.2%} |"
            f" {f['seq_log_std']:13.4f} {f['seq_p01']:6.3f} {f['seq_p99']:6.3f} |"
            f" {m['logprob_diff_mean']:.2e}, {m['tis_weight_mean']:.4f},"
            f" {m['tis_clipped_fraction']:.2%}"
        )
    base = rows[0][2]["mean"]
    for engine_dtype, learner_dtype, f, _ in rows[1:]:
        print(
            f"  mean |gap| {engine_dtype} engine / {learner_dtype} learner ="
            f" {f['mean'] / base:,.0f} x the float32 pair's"
        )
    print(f"sampling {sampled_s:.1f} s, total {time.perf_counter() - started:.1f} s")
    print(f"end: {describe()}")


if __name__ == "__main__":
    main()
