"""MuonClip's cost against AdamW's, inside a whole learner step, measured in one run.

For each model (W1/nano: 128 sequences x 84 tokens; the ~100M `small` preset: 16 x 84), times
  - forward + backward with plain SDPA attention, then AdamW.step;
  - forward + backward with attention-logit capture, then MuonClip.step (Muon on matrices and on
    each expert's matrices, AdamW on the rest, QK-Clip, router-bias update).
Prints the optimizer-step ratio and MuonClip's extra time (capture + step - AdamW step) as a
share of the whole MuonClip learner step (goal: at most 5%). Newton-Schulz costs the same at any
batch while the forward and backward grow with it, so `--scales` repeats W1 with that many times
its sequences per step, to show the tokens per step at which the share falls under 5%.

    .venv/bin/python benchmarks/optimizer_step.py [--repeats 3] [--scales 1 2 4 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from selfcritic.config import ModelConfig, OptimConfig
from selfcritic.model.build import load_model, prepare_model
from selfcritic.model.presets import load_preset
from selfcritic.optim.muonclip import build_muonclip

WORKLOADS = {"nano (W1)": ("nano", 128), "small (~100M)": ("small", 16)}
SEQUENCE = 84


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(path: Path, batch: int, muonclip: bool, repeats: int) -> tuple[float, float]:
    """Median seconds of (forward + backward, optimizer step)."""
    model = load_model(path).train()
    if muonclip:
        optimizer = build_muonclip(model, OptimConfig())
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, SEQUENCE), generator=torch.Generator().manual_seed(0))
    passes, steps = [], []
    for _ in range(repeats + 1):  # the first round warms up
        passes.append(
            timed(lambda: model(input_ids=ids, labels=ids, use_cache=False).loss.backward())
        )
        steps.append(timed(optimizer.step))
        optimizer.zero_grad()
    return statistics.median(passes[1:]), statistics.median(steps[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", type=int, nargs="*", default=[1], help="W1's batch x these")
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    print(
        f"{'model':26s} {'fwd+bwd':>8s} {'+capture':>9s} {'AdamW':>8s} {'MuonClip':>9s} "
        f"{'step ratio':>10s} {'extra share':>11s}"
    )
    runs = [(f"nano x{k} ({128 * k * SEQUENCE} tok)", "nano", 128 * k) for k in args.scales]
    runs += [(label, *workload) for label, workload in WORKLOADS.items() if workload[0] != "nano"]
    for label, preset, batch in runs:
        cfg: ModelConfig = load_preset(preset)
        path = prepare_model(cfg, cache)
        plain_pass, adamw_step = measure(path, batch, muonclip=False, repeats=args.repeats)
        capture_pass, clip_step = measure(path, batch, muonclip=True, repeats=args.repeats)
        extra = (capture_pass - plain_pass) + (clip_step - adamw_step)
        share = extra / (capture_pass + clip_step)
        print(
            f"{label:26s} {plain_pass:8.3f} {capture_pass:9.3f} {adamw_step:8.3f} "
            f"{clip_step:9.3f} {clip_step / adamw_step:10.1f} {share:11.1%}"
        )


if __name__ == "__main__":
    main()
