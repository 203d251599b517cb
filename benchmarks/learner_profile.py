"""Where the learner phase of a W1 step spends its time.

One `Learner.step` (GRPO, engine logprobs trusted as in a run, MuonClip with the default
settings, 2 torch threads, in this process) on W1's batch: 128 sequences of 20 prompt and 64
completion tokens on the W1 model (vocabulary 512). Round 0 warms up; the rest are timed, and the
median round is reported three ways:
- phases (wall clock, the learner's own calls wrapped for the run): batching (padding,
  micro-batches, engine logprobs), the forward, the logprob head (log-softmax and gather), the
  loss, the backward, gradient clipping, Muon, AdamW, QK-Clip, router balancing, zero_grad, and
  what is left (metrics, Python between the calls);
- the forward by module (wall clock from forward hooks, nested parts shown inside their
  parents): attention, the dense MLP, the MoE layer and inside it the router, the routed experts
  (which include the token dispatch: one-hot masks, `where`, gathers and `index_add_` per
  expert) and the shared expert, the norms, the LM head;
- operators (torch.profiler, one more round, self CPU time including the backward's), grouped:
  matrix products, expert dispatch (index, one-hot, nonzero/where, index_add, scatter/gather),
  elementwise, reductions and softmax, the optimizer's own, other. The profiler slows the round;
  its shares, not its seconds, are the result.

    .venv/bin/python benchmarks/learner_profile.py [--repeats 5] [--threads 2] [--no-qk-clip]

`--no-qk-clip` shows the step with transformers' own attention instead of the logit-capturing
kernel QK-Clip needs (selfcritic/model/attention_capture.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from learner_group import w1_batch
from machine import describe

from selfcritic.config import ArchConfig, LearnerConfig, ModelConfig, OptimConfig
from selfcritic.learner import learner as learner_module
from selfcritic.learner.learner import Learner
from selfcritic.model.build import prepare_model
from selfcritic.optim import muonclip as muonclip_module

PROMPTS, SAMPLES, PROMPT_TOKENS, NEW_TOKENS, VOCAB = 16, 8, 20, 64, 512
# operator name fragments -> group (first match wins; matched on the lower-cased name)
OPERATOR_GROUPS = (
    ("expert dispatch", ("index", "one_hot", "nonzero", "where", "scatter", "gather", "masked")),
    ("matrix products", ("mm", "matmul", "linear", "bmm", "addmm", "baddbmm", "einsum")),
    ("softmax and reductions", ("softmax", "sum", "mean", "max", "topk", "norm", "logsumexp")),
    ("optimizer", ("_foreach", "adam", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("elementwise", ("mul", "add", "sub", "div", "silu", "sigmoid", "exp", "neg", "pow", "rsqrt",
                     "clamp", "copy", "fill", "zero", "cat", "to", "where")),
)  # fmt: skip


class PhaseClock:
    """Seconds per phase, from wrapped calls (a call inside another counts for the inner one
    only: the outer phase is charged its own time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []

    @contextmanager
    def phase(self, name: str):
        frame = [name, 0.0]  # (name, seconds of nested phases)
        self._stack.append(frame)
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self._stack.pop()
            self.seconds[name] += spent - frame[1]
            if self._stack:
                self._stack[-1][1] += spent

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def instrument(learner: Learner, clock: PhaseClock) -> None:
    """Wrap the calls a learner step makes (for this process only)."""
    clock.wrap(learner_module, "pad_batch", "batching")
    clock.wrap(learner_module, "token_micro_batches", "batching")
    clock.wrap(learner_module, "engine_logprobs", "batching")
    clock.wrap(learner_module, "token_logprobs", "logprob head")  # the forward nests inside
    clock.wrap(learner.model, "forward", "forward")
    clock.wrap(learner, "loss_fn", "loss")
    clock.wrap(torch.autograd, "backward", "backward")
    clock.wrap(torch.nn.utils, "clip_grad_norm_", "gradient clipping")
    clock.wrap(learner.optimizer.optimizers["muon"], "step", "Muon")
    clock.wrap(learner.optimizer.optimizers["adamw"], "step", "AdamW")
    clock.wrap(muonclip_module, "apply_qk_clip", "QK-Clip")
    clock.wrap(learner.optimizer.balancer, "step", "router balancing")
    clock.wrap(learner.optimizer, "zero_grad", "zero_grad")


def module_clock(model: torch.nn.Module) -> dict[str, float]:
    """Forward seconds per module kind, from pre/post hooks (kinds nest: the MoE holds the
    router, the experts and the shared expert)."""
    seconds: dict[str, float] = defaultdict(float)
    kinds = {
        "DeepseekV3Attention": "attention",
        "DeepseekV3MoE": "MoE layer (all)",
        "DeepseekV3TopkRouter": "  router",
        "DeepseekV3Experts": "  routed experts with dispatch",
        "DeepseekV3RMSNorm": "norms",
    }
    for name, module in model.named_modules():
        kind = kinds.get(type(module).__name__)
        if type(module).__name__ == "DeepseekV3MLP":
            kind = "  shared expert" if "shared_experts" in name else "dense MLP"
        if name == "lm_head":
            kind = "LM head"
        if kind is None:
            continue
        starts: list[float] = []
        module.register_forward_pre_hook(lambda *_, s=starts: s.append(time.perf_counter()))
        module.register_forward_hook(
            lambda *_, s=starts, k=kind: seconds.__setitem__(
                k, seconds[k] + time.perf_counter() - s.pop()
            )
        )
    return seconds


def operator_groups(profile) -> dict[str, float]:
    """Self CPU seconds per operator group (aten operators only)."""
    grouped: dict[str, float] = defaultdict(float)
    for event in profile.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = event.key.removeprefix("aten::").lower()
        group = next(
            (label for label, parts in OPERATOR_GROUPS if any(p in name for p in parts)), "other"
        )
        grouped[group] += event.self_cpu_time_total / 1e6
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-qk-clip",
        action="store_true",
        help="without QK-Clip, so without its logit-capturing attention (transformers' own)",
    )
    parser.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=LearnerConfig().max_tokens_per_micro_batch,
        help="learner.max_tokens_per_micro_batch (W1's batch is 128 x 84 = 10,752 tokens)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    path = prepare_model(ModelConfig(preset="w1", arch=ArchConfig(vocab_size=VOCAB)), cache)
    optim = OptimConfig(qk_clip=not args.no_qk_clip)
    learner_cfg = LearnerConfig(max_tokens_per_micro_batch=args.micro_batch_tokens)
    learner = Learner(path, learner_cfg, optim, trust_engine=True)
    clock = PhaseClock()
    instrument(learner, clock)
    by_module = module_clock(learner.model)
    batch = w1_batch(vocab=VOCAB)  # the learner-group benchmark's batch, W1's vocabulary
    before = describe()
    rounds = []
    for round_ in range(args.repeats + 1):
        clock.seconds.clear()
        by_module.clear()
        start = time.perf_counter()
        learner.step(batch)
        total = time.perf_counter() - start
        if round_ > 0:  # round 0 warms up
            rounds.append((total, dict(clock.seconds), dict(by_module)))
    total, phases, modules = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        learner.step(batch)
    operators = operator_groups(profile)

    attention = learner.model.config._attn_implementation
    print(f"start: {before}\nend:   {describe()}")
    print(f"W1 learner step, {args.threads} threads, attention {attention!r}")
    print(f"steps: {' '.join(f'{r[0]:.3f}' for r in rounds)} s; median {total:.3f} s\n")
    print("| phase | seconds | share |\n| --- | --- | --- |")
    rest = total - sum(phases.values())
    for name, seconds in sorted(phases.items(), key=lambda item: -item[1]) + [("rest", rest)]:
        print(f"| {name} | {seconds:.3f} | {100 * seconds / total:.1f}% |")
    forward = phases.get("forward", 0.0)
    print("\n| forward part (hooks) | seconds | share of the forward |\n| --- | --- | --- |")
    for name, seconds in sorted(modules.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds:.3f} | {100 * seconds / max(forward, 1e-9):.1f}% |")
    profiled = sum(operators.values())
    print("\n| operator group (profiled round) | self CPU share |\n| --- | --- |")
    for name, seconds in sorted(operators.items(), key=lambda item: -item[1]):
        print(f"| {name} | {100 * seconds / profiled:.1f}% |")
    print(
        f"\n{statistics.mean(r[0] for r in rounds):.3f} s mean step; profiled round "
        f"{profiled:.3f} s of operator self time"
    )


if __name__ == "__main__":
    main()
