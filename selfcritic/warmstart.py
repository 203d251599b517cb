"""The warm-start stage: supervised training through the learner's PTX loss, cached on disk.

Data (selfcritic/data/nano_world.py, training split only), `warmstart.steps` batches of:
- actor answers: a question -> a response, right or wrong and clean or defective at the
  configured rates, so the actor starts weak and with habits to unlearn;
- critic verdicts: the critic prompt of a labelled pair (`critic.template`, the better response
  shown first or second at random) -> what a right critic writes: in generative mode its checks
  and the verdict (" =19 X18- Y19+ #Y": on correctness it works the sum out, restates each
  answer and marks it; " X- Y+ #Y" on a style aspect; `warmstart.side_by_side` restates the
  computed answer beside each one, on on_task too: `LabelledPair.critic_answer`), in
  probability mode the letter alone. The marks can weigh more than other tokens in the loss
  (`warmstart.mark_weight`, here and in RL's PTX). A share of the pairs tie on the judged
  aspect (the letter then names the first shown, so the two orders cancel): the critic learns
  that the other aspects do not decide this one.
Every target ends with EOS and only targets are learned. One training path: a `Learner` (the
class each learner-group rank runs) whose batches hold only PTX pairs, so MuonClip's QK-Clip and
router balancing act as they do in RL. Its rates are constant, or held and then decayed over
the last steps (`warmstart.lr_schedule`: warm-up-stable-decay without the warm-up). The result,
a Hugging Face checkpoint, is cached under `<trainer.cache_dir>/warmstart/<key>/` where the key
hashes everything the weights depend on; a second run with the same settings reuses it. Left
out: warm-starting from a user's dataset (point `model.path` at an SFT checkpoint instead).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

from selfcritic.config import Config, LearnerConfig, WarmStartConfig
from selfcritic.critic.judge import Judge, prompt_encoder, verdict_token_ids
from selfcritic.data.nano_world import (
    MARKS,
    ON_TASK,
    REPEAT_ASPECTS,
    STYLE_ASPECTS,
    DefectRates,
    LabelledPair,
    Task,
    draw_task,
    labelled_pair,
    synthetic_response,
    tie_pair,
)
from selfcritic.schedule import lr_scale_at

_FORMAT = 9  # bump when the recipe changes outside the files below
# The code that makes the warm-start data: its text is part of the cache key, so an edit to the
# tasks, the pairs or the critic's targets never reuses weights trained on the old data (a
# hand-bumped format number alone once let a run reuse a reverted recipe's warm-start)
RECIPE_SOURCES = (
    Path(__file__),
    Path(__file__).parent / "data" / "nano_world.py",
    Path(__file__).parent / "data" / "phrases.py",
)
Pair = tuple[tuple[int, ...], tuple[int, ...]]  # (context ids, target ids)


def defect_rates(cfg: Config) -> DefectRates:
    w = cfg.warmstart
    return DefectRates(wrong=w.wrong, praise=w.praise, meta=w.meta, filler=w.filler, claim=w.claim)


class WarmStartData:
    """Makes the (context, target) pairs of actor answers and critic verdicts."""

    def __init__(self, cfg: Config, tokenizer) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.encode = prompt_encoder(tokenizer)
        self.rates = defect_rates(cfg)
        self.judge = Judge(
            cfg.critic, self.encode, verdict_token_ids(tokenizer, cfg.critic.verdict_letters)
        )
        # (token id, weight) of the verdicts' marks in the loss (`warmstart.mark_weight`)
        self.token_weights = tuple(
            (token_id, cfg.warmstart.mark_weight)
            for token_id in tokenizer.convert_tokens_to_ids(list(MARKS))
        )

    def target(self, text: str) -> tuple[int, ...]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return (*ids, self.tokenizer.eos_token_id)

    def actor(self, rng: random.Random) -> Pair:
        task = draw_task(self.cfg.data, rng)
        response = synthetic_response(task, self.rates, rng)
        return tuple(self.encode(task.question)), self.target(response)

    def critic(self, rng: random.Random, correctness: bool = True) -> Pair:
        """A verdict on a correctness pair (half the time, if `correctness`) or on one style
        aspect."""
        verifiable = correctness and rng.random() < 0.5
        while True:
            task: Task = draw_task(self.cfg.data, rng)
            if task.verifiable == verifiable:
                break
        aspect = "correct" if verifiable else self.repeat_aspect(rng)
        # some style pairs minimal (the defect is the only difference: learned fast), the rest
        # not (the better response is as often the longer one: no brevity shortcut)
        warm = self.cfg.warmstart
        if rng.random() < warm.ties:
            pair = tie_pair(task, aspect, self.rates, rng)
        else:
            pair = labelled_pair(task, aspect, self.rates, rng, rng.random() < warm.minimal_pairs)
        return self.verdict(pair, swapped=rng.random() < 0.5)

    def repeat_aspect(self, rng: random.Random) -> str:
        """on_task at `warmstart.on_task_share`, else one of the defect aspects; all four alike
        when it is None."""
        share = self.cfg.warmstart.on_task_share
        if share is None:
            return rng.choice(REPEAT_ASPECTS)
        return ON_TASK if rng.random() < share else rng.choice(sorted(STYLE_ASPECTS))

    def verdict(self, pair: LabelledPair, swapped: bool) -> Pair:
        """The critic prompt with the better response first (or second, `swapped`) and the
        answer a right critic gives."""
        critic = self.cfg.critic
        letters = tuple(critic.verdict_letters)
        answer = pair.verdict_letter(swapped, letters)
        if critic.verdict_mode == "generative":
            side_by_side = self.cfg.warmstart.side_by_side
            answer = pair.critic_answer(swapped, letters, critic.verdict_marker, side_by_side)
        return tuple(self.encode(self.judge.prompt_text(pair.job(), swapped))), self.target(answer)

    def batch(
        self, rng: random.Random, actor: int, critic: int, correctness: bool = True
    ) -> tuple[Pair, ...]:
        actors = [self.actor(rng) for _ in range(actor)]
        return tuple(actors + [self.critic(rng, correctness) for _ in range(critic)])


def warm_start_optim(cfg: Config):
    """The optimizer settings of the warm-start: the run's, with the warm-start's rates."""
    return dataclasses.replace(
        cfg.optim, muon_lr=cfg.warmstart.muon_lr, adamw_lr=cfg.warmstart.adamw_lr
    )


def warm_start_lr_scale(warm: WarmStartConfig, step: int) -> float:
    """The factor on the warm-start's rates at `step`: held, then decayed over the last
    `lr_decay_fraction` of the steps (selfcritic/schedule.py)."""
    decay_steps = int(warm.lr_decay_fraction * warm.steps)
    return lr_scale_at(
        step, warm.steps, warm.lr_schedule, 0, warm.lr_final_fraction, decay_steps=decay_steps
    )


def cache_key(cfg: Config) -> str:
    """A hash of everything the warm-started weights depend on."""
    warm = dataclasses.asdict(cfg.warmstart)
    warm.pop("ptx_per_step")  # an RL setting
    data = {
        k: getattr(cfg.data, k) for k in ("max_operand", "rubric_only_share", "heldout_fraction")
    }
    critic = {
        k: getattr(cfg.critic, k)
        for k in ("template", "verdict_letters", "verdict_marker", "verdict_mode")
    }
    recipe = [
        dataclasses.asdict(cfg.model),
        warm,
        data,
        critic,
        dataclasses.asdict(warm_start_optim(cfg)),
        cfg.learner.max_tokens_per_micro_batch,
        _FORMAT,
        [hashlib.sha256(path.read_bytes()).hexdigest() for path in RECIPE_SOURCES],
    ]
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def warm_start(cfg: Config, base_model: Path, cache_dir: Path) -> Path:
    """The warm-started checkpoint for `cfg` (trained now unless cached); its directory."""
    target = cache_dir / "warmstart" / cache_key(cfg)
    if (target / "COMPLETE").exists():
        print(f"warm-start: reusing {target}", flush=True)
        return target / "model"
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")  # runs may race
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    history = train(cfg, base_model, staging / "model")
    (staging / "history.json").write_text(json.dumps(history))
    (staging / "COMPLETE").touch()
    if (target / "COMPLETE").exists():  # another run finished the same warm-start first
        shutil.rmtree(staging)
    else:
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target / "model"


def train(cfg: Config, base_model: Path, out_dir: Path) -> dict:
    """Run the supervised steps in this process and save the model; returns the loss history."""
    import torch
    from transformers import AutoTokenizer

    from selfcritic.checkpoint import save_hf_checkpoint
    from selfcritic.learner.learner import Learner, PolicyBatch

    torch.manual_seed(cfg.warmstart.seed)
    torch.set_num_threads(max(1, cfg.learner.threads_per_rank))
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    data = WarmStartData(cfg, tokenizer)
    learner_cfg = LearnerConfig(
        ptx_weight=1.0, max_tokens_per_micro_batch=cfg.learner.max_tokens_per_micro_batch
    )
    learner = Learner(base_model, learner_cfg, warm_start_optim(cfg), trust_engine=True)
    rng = random.Random(f"warmstart:{cfg.warmstart.seed}")
    warm, losses, start = cfg.warmstart, [], time.perf_counter()
    marks = data.token_weights  # the verdicts' marks and their weight
    for step in range(1, warm.steps + 1):
        correctness = step > warm.correctness_after * warm.steps
        pairs = data.batch(rng, warm.actor_examples, warm.critic_examples, correctness)
        lr_scale = warm_start_lr_scale(warm, step)
        batch = PolicyBatch(
            [], [], [], [], 1.0, 1, ptx_sequences=pairs, ptx_token_weights=marks, lr_scale=lr_scale
        )
        losses.append(learner.step(batch)["ptx_loss"])
        if step % 25 == 0 or step == warm.steps:
            seconds = time.perf_counter() - start
            print(
                f"warm-start {step}/{warm.steps}  loss {losses[-1]:.3f}  {seconds:.0f} s",
                flush=True,
            )
    save_hf_checkpoint(learner.model, base_model, out_dir)
    return {"loss": losses, "seconds": time.perf_counter() - start}
