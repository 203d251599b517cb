"""selfcritic's self-critic and verifiers as reward functions of TRL's `GRPOTrainer`.

    from selfcritic.integrations.trl import SelfCriticReward, VerifierReward

    math = VerifierReward("math", reference_key="answer")
    critic = SelfCriticReward(rubric="k2_core", verifier=math)
    trainer = GRPOTrainer(model=..., reward_funcs=[critic, math], train_dataset=..., ...)
    critic.attach(trainer)  # the model that judges, and the callback that keeps the state
    trainer.train()

`SelfCriticReward`: the policy TRL trains judges its own completions pairwise within each
prompt's group (TRL's `num_generations` consecutive completions of one prompt), on each aspect of
the rubric (a name in rewards/rubrics, a YAML path, "package.module:object", or a `Rubric`), in
both orders, through selfcritic's own `SelfCritic`: the same schedule, aggregation (centred per
group), invalid-verdict rule, aspect gate, anchor set and metrics as selfcritic's loop. The
judging model is TRL's colocated vLLM engine when the trainer has one (`use_vllm=True`,
`vllm_mode="colocate"`, one GPU per engine), else the trainer's model itself, unwrapped for
generation as TRL unwraps it. A prompt's group can span processes in TRL: every process gathers
the step's completions, judges all groups the same way (the critic's state stays identical on
every process) and keeps its own slice.

`VerifierReward`: a registered verifier (or "module:function") in selfcritic's worker pool, each
sample under its own timeout and the code verifiers in their sandbox; a completion whose row has
no reference scores None (TRL leaves it out of the sum). Failures are counted in the metrics.

The critic's state across steps (replay buffer, anchor set, gate measurements) lives in
`SelfCriticCallback` and is saved into each TRL checkpoint (`selfcritic_critic.pkl`) and read
back when training resumes from one.

Left out, as TRL's hooks give no place for them (docs/trl.md): calibration training (the critic's
agreement with the verifier is measured and logged, but no loss or verdict group trains it: TRL
trains only the completions it generated), RL-form calibration (refused), PTX, and selfcritic's
asynchronous rollout. Tested with trl==TESTED_TRL.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rewards.base import Rubric
from rewards.pool import BatchStats, VerifierPool
from rewards.registry import load_rubric
from selfcritic.config import CriticConfig
from selfcritic.critic.gate import FROM_ENV, load_probes
from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
from selfcritic.critic.self_critic import CritiqueResult, SelfCritic
from selfcritic.rollout.types import Sample, SamplingSpec, request_seed

TESTED_TRL = "1.16.0"  # the version the bridge is tested with (pyproject's `trl` extra)
STATE_FILE = "selfcritic_critic.pkl"  # the critic's state inside a TRL checkpoint
# metrics of calibration training, which TRL cannot do: not logged
_NOT_LOGGED = ("critic/calibration_examples", "critic/calibration_replayed")


class VerifierReward:
    """A selfcritic verifier as a TRL reward function: one score in [0, 1] per completion, None
    where the row has no reference (`reference_key`: the dataset column holding it)."""

    def __init__(
        self,
        verifier: str,
        reference_key: str = "answer",
        options: dict | None = None,
        workers: int = 2,
        timeout_s: float = 10.0,
    ) -> None:
        """`workers`: verifier processes (0 scores in this process, with no timeout);
        `timeout_s`: the wall-clock time a sample may take before it scores 0."""
        self.pool = VerifierPool(verifier, options, workers, timeout_s)  # unknown name: KeyError
        self.reference_key = reference_key
        self.__name__ = f"verifier_{verifier}".replace(".", "_").replace(":", "_")
        self._last: tuple[tuple, list[float | None]] | None = None
        self.last_stats = BatchStats()  # the failures of the last batch scored

    def scores(self, completions: list[str], references: list) -> list[float | None]:
        """Scores of (completion, reference) pairs; the last call's are reused when asked again
        for the same pairs (the critic's calibration and TRL's reward call in one step)."""
        key = (tuple(completions), tuple(references))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        checked = [k for k, ref in enumerate(references) if ref not in (None, "")]
        results, self.last_stats = self.pool.score(
            [(completions[k], str(references[k])) for k in checked]
        )
        scores: list[float | None] = [None] * len(completions)
        for k, result in zip(checked, results, strict=True):
            scores[k] = result.score
        self._last = (key, scores)
        return scores

    def references(self, columns: dict, count: int) -> list:
        if self.reference_key not in columns:
            raise KeyError(
                f"{self.__name__}: the dataset has no column {self.reference_key!r} "
                f"(reference_key); its columns: {sorted(columns)}"
            )
        references = list(columns[self.reference_key])
        if len(references) != count:
            raise ValueError(f"{self.reference_key}: {len(references)} values for {count} rows")
        return references

    def __call__(self, prompts, completions, log_metric=None, **columns) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        scores = self.scores(texts, self.references(columns, len(texts)))
        if log_metric is not None:
            for name, value in self.last_stats.metrics().items():
                log_metric(name, value)
        return scores

    def close(self) -> None:
        self.pool.close()


class SelfCriticReward:
    """The self-critic as a TRL reward function: per completion its centred critic score."""

    __name__ = "self_critic"

    def __init__(
        self,
        rubric: str | Rubric = "k2_core",
        critic: CriticConfig | None = None,
        verifier: VerifierReward | None = None,
        chat_template: str = "auto",
        seed: int = 0,
    ) -> None:
        """`critic`: selfcritic's critic settings (docs/critic.md; the defaults otherwise);
        `verifier`: scores that calibrate the critic's measurement (its agreement with the
        verifier is logged), usually one also among TRL's reward functions; `chat_template`:
        "auto" (the tokenizer's, if any), "none" or a path, as `data.chat_template`; `seed`:
        with the step, seeds every sampled verdict (generative critics at temperature > 0)."""
        self.cfg = critic or CriticConfig()
        self.rubric = rubric if isinstance(rubric, Rubric) else load_rubric(rubric)
        if self.cfg.calibration.enabled and self.cfg.calibration.form != "supervised":
            raise ValueError(
                f"critic.calibration.form={self.cfg.calibration.form!r}: TRL trains only the "
                "completions it generates, so RL-form calibration cannot run inside it; use "
                "'supervised' (measured and logged, not trained) or calibration.enabled=False"
            )
        if self.cfg.gate.source == FROM_ENV:
            raise ValueError(
                "critic.gate.source='env': there is no selfcritic environment inside TRL; give a "
                "JSONL file of labelled probe pairs or null"
            )
        self.verifier, self.chat_template, self.seed = verifier, chat_template, seed
        self.callback = SelfCriticCallback()
        self.trainer = None
        self.last: CritiqueResult | None = None  # the last step's judgement (for inspection)
        self.last_seed: int | None = None

    def attach(self, trainer) -> None:
        """Bind to a built `GRPOTrainer`: its tokenizer, the engine that judges (its colocated
        vLLM, else its model) and the callback that keeps and saves the critic's state."""
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        encode = prompt_encoder(tokenizer, self.chat_template)
        model_config = trainer.accelerator.unwrap_model(trainer.model).config
        self.callback.critic = SelfCritic(
            self.cfg,
            self.rubric,
            encode,
            verdict_token_ids(tokenizer, self.cfg.verdict_letters),
            load_probes(self.cfg.gate, None),
            context_len=getattr(model_config, "max_position_embeddings", None),
        )
        self.trainer, self.tokenizer = trainer, tokenizer
        self.engine = trainer_engine(trainer, tokenizer)
        trainer.add_callback(self.callback)

    def __call__(
        self,
        prompts,
        completions,
        completion_ids=None,
        trainer_state=None,
        log_metric=None,
        **columns,
    ) -> list[float]:
        if self.trainer is None:
            raise RuntimeError(
                "SelfCriticReward is not attached: call critic.attach(trainer) after building "
                "the GRPOTrainer and before trainer.train()"
            )
        rows = _rows(prompts, completions, completion_ids, self.tokenizer)
        verified = None
        if self.verifier is not None:
            references = self.verifier.references(columns, len(rows))
            verified = self.verifier.scores([row[1] for row in rows], references)
        mine = slice(0, len(rows))
        if self.trainer.accelerator.num_processes > 1:  # a group can span processes
            rows, verified, mine = _gathered(rows, verified)
        step = trainer_state.global_step if trainer_state is not None else 0
        result = self.judge(rows, verified, step)
        if log_metric is not None:
            for name, value in result.metrics().items():
                if name not in _NOT_LOGGED and math.isfinite(value):
                    log_metric(name, value)
        return [score for group in result.scores for score in group][mine]

    def judge(self, rows: list[tuple], verified: list | None, step: int) -> CritiqueResult:
        """Score every group of `rows` ((question, completion text, completion ids), each group
        `num_generations` consecutive rows of one prompt) with the critic."""
        trainer = self.trainer  # TRL's evaluation groups are num_generations_eval long
        size = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        groups = _groups(rows, size)
        questions = [group[0][0] for group in groups]
        samples = [[Sample((), ids, text, (), "stop", 0) for _, text, ids in g] for g in groups]
        verified_groups = None
        if verified is not None:
            verified_groups = [verified[k : k + size] for k in range(0, len(verified), size)]
        self.last_seed = request_seed(self.seed, step)
        self.last = self.callback.critic.score(
            questions, samples, self.engine, self.last_seed, verified=verified_groups, step=step + 1
        )
        return self.last


class SelfCriticCallback(TrainerCallback):
    """Holds the critic (its replay buffer, anchor set and gate measurements) across TRL's
    steps; saves its state into each checkpoint and reads it back on resume."""

    def __init__(self) -> None:
        self.critic: SelfCritic | None = None

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.critic is not None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / STATE_FILE).write_bytes(pickle.dumps(self.critic.state()))

    def on_train_begin(self, args, state, control, **kwargs):
        """A run resumed from checkpoint-N starts at global step N: the critic's state saved
        there is read back (none saved: a warning, the critic starts fresh)."""
        if state.global_step == 0 or self.critic is None:
            return
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        if saved.is_file():
            self.critic.load_state(pickle.loads(saved.read_bytes()))
        else:
            print(f"warning: {saved} is missing: the critic's state starts fresh", flush=True)


class TrainerModelEngine:
    """The RolloutEngine protocol's `generate` over the model a TRL trainer trains, unwrapped
    for generation (DeepSpeed ZeRO-3 parameters gathered, gradient checkpointing off) and in eval
    mode for the call."""

    def __init__(self, trainer, tokenizer) -> None:
        self.trainer, self.tokenizer = trainer, tokenizer

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        from trl.models import unwrap_model_for_generation

        from selfcritic.rollout.hf_engine import TransformersEngine

        trainer = self.trainer
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            training = model.training
            model.eval()
            try:
                return TransformersEngine.around(model, self.tokenizer).generate(prompts, spec)
            finally:
                model.train(training)


class SleepingVLLMEngine:
    """TRL's colocated vLLM with sleep mode: woken with the current weights for the critic's
    call, put back to sleep after it, as TRL does around its own generation."""

    def __init__(self, generation) -> None:
        from selfcritic.rollout.vllm_engine import VLLMEngine

        self.generation, self.engine = generation, VLLMEngine.around(generation.llm)

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        generation = self.generation
        if generation._llm_weights_sleeping:
            generation.sync_weights()  # wakes the weights and loads the training ones
        try:
            return self.engine.generate(prompts, spec)
        finally:
            generation.llm.sleep(level=2)
            generation._llm_weights_sleeping = True


def trainer_engine(trainer, tokenizer):
    """What judges: TRL's colocated vLLM (one GPU per engine), else the trainer's model."""
    generation = getattr(trainer, "vllm_generation", None)
    if not getattr(trainer, "use_vllm", False) or generation is None:
        return TrainerModelEngine(trainer, tokenizer)
    if generation.mode != "colocate" or generation.tensor_parallel_size > 1:
        print(
            f"selfcritic: TRL's vLLM ({generation.mode}, tensor parallel "
            f"{generation.tensor_parallel_size}) serves only TRL's own requests; the critic "
            "judges with the trainer's model",
            flush=True,
        )
        return TrainerModelEngine(trainer, tokenizer)
    if generation.enable_sleep_mode:
        return SleepingVLLMEngine(generation)
    from selfcritic.rollout.vllm_engine import VLLMEngine

    return VLLMEngine.around(generation.llm)


def question_text(prompt: Any) -> str:
    """What the critic is shown as the request: a text prompt as it is; a conversation's user
    turns, joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(_content(m) for m in prompt if m.get("role") == "user")


def completion_text(completion: Any) -> str:
    """What the critic judges: a text completion as it is; a conversational one's assistant
    turns, with other turns (tool results) marked by their role."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        text = _content(message)
        parts.append(text if message.get("role") == "assistant" else f"[{message['role']}] {text}")
    return "\n".join(parts)


def _content(message: dict) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # parts: keep the text ones
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _rows(prompts, completions, completion_ids, tokenizer) -> list[tuple]:
    texts = [completion_text(c) for c in completions]
    if completion_ids is None:
        completion_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    return [
        (question_text(p), text, tuple(ids))
        for p, text, ids in zip(prompts, texts, completion_ids, strict=True)
    ]


def _groups(rows: list[tuple], size: int) -> list[list[tuple]]:
    """Consecutive blocks of `size` rows, each one prompt's; a batch that does not split so is
    refused, naming what TRL's settings must give."""
    if len(rows) % size:
        raise ValueError(
            f"the self-critic got {len(rows)} completions, not whole groups of num_generations="
            f"{size}: judging needs each prompt's whole group"
        )
    groups = [rows[k : k + size] for k in range(0, len(rows), size)]
    for group in groups:
        if len({row[0] for row in group}) != 1:
            raise ValueError(
                "a group of num_generations consecutive completions holds different prompts: "
                "the self-critic needs TRL's grouped order (its RepeatSampler)"
            )
    return groups


def _gathered(rows: list[tuple], verified: list | None) -> tuple[list, list | None, slice]:
    """Every process's rows (and verifier scores) in process order, and this process's slice."""
    from accelerate.state import PartialState
    from accelerate.utils import gather_object

    counts = gather_object([len(rows)])
    start = sum(counts[: PartialState().process_index])
    everything = gather_object(list(rows))
    scores = None if verified is None else gather_object(list(verified))
    return everything, scores, slice(start, start + len(rows))


__all__ = ["TESTED_TRL", "SelfCriticCallback", "SelfCriticReward", "VerifierReward"]
