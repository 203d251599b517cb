"""How far the W1 learner step is from this machine's floor, against the work TRL's step does.

Three measurements on W1's batch (128 sequences of 20 prompt + 64 completion tokens, the W1 model,
vocabulary 512), float32, 2 torch threads, in this process, interleaved round by round:
- ours: one `Learner.step` (GRPO, engine logprobs trusted, default MuonClip), as
  `benchmarks/learner_profile.py` runs it;
- the peer's work: what TRL's non-generation time is made of on this model (its
  `GRPOTrainer` with `beta=0` and one iteration): transformers' forward over all 128 sequences
  in one batch, the completion tokens' logprobs, a policy-gradient loss, the backward and
  `torch.optim.AdamW`; TRL's own bookkeeping is not in it, so this is at most what TRL spends
  outside generation;
- the floor: the matrix products of one `Learner.step` (every `mm`, `addmm`, `bmm` and
  `baddbmm` the step dispatches, forward and backward, recorded with their shapes), replayed
  back to back on fresh tensors with nothing else in between. No implementation that does the
  step's arithmetic in float32 on this BLAS goes below it; what it leaves out (elementwise
  work, norms, softmax, the attention kernel's own products, the optimizer) only adds.

It prints the matrix products' FLOPs and the rate each measurement reaches, and the ratios to
the peer's work: the issue's goal is a learner phase at most 0.7x TRL's non-generation time.

    .venv/bin/python benchmarks/learner_floor.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from learner_group import w1_batch
from machine import describe
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

from selfcritic.config import ArchConfig, LearnerConfig, ModelConfig, OptimConfig
from selfcritic.learner.learner import Learner, PolicyBatch
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.model.build import prepare_model

VOCAB = 512
GOAL = 0.7  # the issue's: the learner phase at most this times TRL's non-generation time
PRODUCTS = {"mm", "addmm", "bmm", "baddbmm"}


class ProductRecorder(TorchDispatchMode):
    """Records the shapes of every matrix product dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[torch.Size, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in PRODUCTS:
            operands = args[1:3] if name in ("addmm", "baddbmm") else args[:2]
            self.calls.append((name, tuple(t.shape for t in operands)))
        return func(*args, **(kwargs or {}))


def product_flops(calls: list[tuple[str, tuple[torch.Size, ...]]]) -> float:
    """2 x multiply-adds of each recorded product: m x k @ k x n, batched or not."""
    total = 0.0
    for _, (left, right) in calls:
        batch = left[0] if len(left) == 3 else 1
        total += 2.0 * batch * left[-2] * left[-1] * right[-1]
    return total


def replay(calls: list[tuple[str, tuple[torch.Size, ...]]]):
    """A function running the recorded products back to back on fixed random tensors."""
    operands = [tuple(torch.randn(shape) for shape in shapes) for _, shapes in calls]
    multiply = {2: torch.mm, 3: torch.bmm}

    def run() -> None:
        for left, right in operands:
            multiply[left.dim()](left, right)

    return run


def peer_step(model, optimizer, batch: PolicyBatch, advantages: torch.Tensor) -> None:
    """transformers' forward and backward over the whole batch at once, and AdamW."""
    ids, attention, mask = pad_batch(batch.prompts, batch.completions, pad_id=0)
    logprobs = token_logprobs(model, ids, attention, batch.temperature)
    loss = -(advantages[:, None] * logprobs * mask).sum() / mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    path = prepare_model(ModelConfig(preset="w1", arch=ArchConfig(vocab_size=VOCAB)), cache)
    learner = Learner(path, LearnerConfig(), OptimConfig(), trust_engine=True)
    peer = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    peer_optimizer = torch.optim.AdamW(peer.parameters(), lr=1e-6)
    batch = w1_batch(vocab=VOCAB)
    advantages = torch.tensor(batch.advantages)

    recorder = ProductRecorder()
    with recorder:
        learner.step(batch)
    flops = product_flops(recorder.calls)
    floor = replay(recorder.calls)
    runs = {
        "ours": lambda: learner.step(batch),
        "peer": lambda: peer_step(peer, peer_optimizer, batch, advantages),
        "floor": floor,
    }
    before = describe()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats + 1):
        for name, run in runs.items():
            spent = timed(run)
            if round_ > 0:  # round 0 warms up
                seconds[name].append(spent)
    median = {name: statistics.median(values) for name, values in seconds.items()}

    print(f"start: {before}\nend:   {describe()}")
    print(f"W1 learner step, float32, {args.threads} threads, {args.repeats} timed rounds")
    print(f"matrix products of one step: {len(recorder.calls)} calls, {flops / 1e9:.1f} GFLOP\n")
    labels = {
        "ours": "selfcritic `Learner.step`",
        "peer": "transformers forward + backward + AdamW (TRL's non-generation work)",
        "floor": "the step's matrix products alone (the floor)",
    }
    print("| measurement | median s | rounds (s) | product GFLOP/s | / the peer's work |")
    print("| --- | --- | --- | --- | --- |")
    for name, label in labels.items():
        rounds = " ".join(f"{value:.3f}" for value in seconds[name])
        rate = flops / median[name] / 1e9
        ratio = median[name] / median["peer"]
        print(f"| {label} | {median[name]:.3f} | {rounds} | {rate:.0f} | {ratio:.3f} |")
    goal = GOAL * median["peer"]
    print(
        f"\nthe goal, {GOAL} x the peer's work: {goal:.3f} s; the floor is "
        f"{median['floor'] / goal:.2f} x the goal, ours {median['ours'] / goal:.2f} x"
    )


if __name__ == "__main__":
    main()
