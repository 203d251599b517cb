"""The warm-start stage: supervised training through the learner's PTX loss, cached on disk.

The pairs come from the environment's corpus (`Corpus` in selfcritic/envs/base.py: the nano
world's are actor answers and critic verdicts, selfcritic/envs/nano/corpus.py), `warmstart.steps`
batches of them; only targets are learned, with the corpus's token weights. One training path:
a `Learner` (the class each learner-group rank runs) whose batches hold only PTX pairs, so
MuonClip's QK-Clip and router balancing act as they do in RL. Its rates are constant, or held
and then decayed over the last steps (`warmstart.lr_schedule`: warm-up-stable-decay without the
warm-up). The result, a Hugging Face checkpoint, is cached under
`<trainer.cache_dir>/warmstart/<key>/` where the key hashes everything the weights depend on
(the corpus's recipe and source files among them); a second run with the same settings reuses
it. `continue_supervised` runs more of the same steps from a warm-start at the RL stage's
rates: the same-compute supervised baseline RL is measured against. Left out: warm-starting
from a user's dataset without an environment corpus (point `model.path` at an SFT checkpoint
instead).
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
from selfcritic.envs.base import Corpus
from selfcritic.schedule import lr_scale_at

_FORMAT = 9  # bump when the recipe changes outside the corpus's sources and this file


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


def cache_key(cfg: Config, corpus: Corpus) -> str:
    """A hash of everything the warm-started weights depend on."""
    warm = dataclasses.asdict(cfg.warmstart)
    warm.pop("ptx_per_step")  # an RL setting
    recipe = [
        dataclasses.asdict(cfg.model),
        warm,
        corpus.recipe,
        dataclasses.asdict(warm_start_optim(cfg)),
        cfg.learner.max_tokens_per_micro_batch,
        _FORMAT,
        [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in corpus.sources],
        [hashlib.sha256(Path(__file__).read_bytes()).hexdigest()],
    ]
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def warm_start(cfg: Config, corpus: Corpus, base_model: Path, cache_dir: Path) -> Path:
    """The warm-started checkpoint of `base_model` for `cfg` on `corpus` (made with the base
    model's tokenizer; trained now unless cached); its directory."""
    target = cache_dir / "warmstart" / cache_key(cfg, corpus)
    if (target / "COMPLETE").exists():
        print(f"warm-start: reusing {target}", flush=True)
        return target / "model"
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")  # runs may race
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    history = train(cfg, corpus, base_model, staging / "model")
    (staging / "history.json").write_text(json.dumps(history))
    (staging / "COMPLETE").touch()
    if (target / "COMPLETE").exists():  # another run finished the same warm-start first
        shutil.rmtree(staging)
    else:
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target / "model"


def train(cfg: Config, corpus: Corpus, base_model: Path, out_dir: Path) -> dict:
    """Run the supervised steps in this process and save the model; returns the loss history."""
    warm = cfg.warmstart
    return supervised(
        cfg,
        corpus,
        base_model,
        out_dir,
        warm_start_optim(cfg),
        [warm_start_lr_scale(warm, step) for step in range(1, warm.steps + 1)],
        random.Random(f"warmstart:{warm.seed}"),
        "warm-start",
    )


def continue_supervised(
    cfg: Config, corpus: Corpus, warm_started: Path, out_dir: Path, steps: int, seed: int
) -> dict:
    """The warm-start continued for `steps` more batches of its corpus, at the RL stage's rates
    and schedule (optim.*, trainer.lr_schedule): the same-compute supervised baseline an RL run
    is measured against (benchmarks/sft_baseline.py). Returns the loss history."""
    train_cfg = cfg.trainer
    scales = [
        lr_scale_at(step, steps, train_cfg.lr_schedule, 0, train_cfg.lr_final_fraction)
        for step in range(1, steps + 1)
    ]
    rng = random.Random(f"supervised-baseline:{seed}")
    return supervised(cfg, corpus, warm_started, out_dir, cfg.optim, scales, rng, "supervised")


def supervised(
    cfg: Config, corpus: Corpus, model: Path, out_dir: Path, optim, scales, rng, label: str
) -> dict:
    """One supervised step on a corpus batch per factor in `scales` (on `optim`'s rates) from
    `model`, in this process, its progress printed as `label`; saves the model to `out_dir`
    and returns the loss history."""
    import torch

    from selfcritic.checkpoint import save_hf_checkpoint
    from selfcritic.learner.learner import Learner, PolicyBatch

    torch.manual_seed(cfg.warmstart.seed)
    torch.set_num_threads(max(1, cfg.learner.threads_per_rank))
    learner_cfg = LearnerConfig(
        ptx_weight=1.0, max_tokens_per_micro_batch=cfg.learner.max_tokens_per_micro_batch
    )
    learner = Learner(model, learner_cfg, optim, True, cfg.model.trust_remote_code)
    losses, start, steps = [], time.perf_counter(), len(scales)
    for step, lr_scale in enumerate(scales, start=1):
        pairs = corpus.warm_start_batch(rng, step, steps)
        batch = PolicyBatch(
            [],
            [],
            [],
            [],
            1.0,
            1,
            ptx_sequences=pairs,
            ptx_token_weights=corpus.token_weights,
            lr_scale=lr_scale,
        )
        losses.append(learner.step(batch)["ptx_loss"])
        if step % 25 == 0 or step == steps:
            seconds = time.perf_counter() - start
            print(f"{label} {step}/{steps}  loss {losses[-1]:.3f}  {seconds:.0f} s", flush=True)
    save_hf_checkpoint(learner.model, model, out_dir)
    return {"loss": losses, "seconds": time.perf_counter() - start}
