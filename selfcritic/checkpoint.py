"""Checkpoints: Hugging Face weights, and full training checkpoints for exact resume.

`save_hf_checkpoint` writes a model in Hugging Face format (loadable by transformers and vLLM as
is) with the tokenizer files. A training checkpoint is a directory
`<output_dir>/checkpoints/step-NNNNNN/` holding
- `model/`: the weights in Hugging Face format (router biases included: they are buffers);
- `learner/`: the learner group's model and optimizer state, sharded, written by every rank with
  torch.distributed.checkpoint (reloadable at another world size);
- `trainer.json`: the step, the engines' weight version, the tracker's run id, the driver's RNG
  state; `critic.pkl`: the critic's replay buffer and anchor set;
- `COMPLETE`: written last.
It is written under a temporary name, every file fsynced, then renamed into place (and the parent
directory fsynced), so a kill at any moment leaves either no new checkpoint or a complete one; a
directory without `COMPLETE` is never picked by `newest_checkpoint`. The newest `keep` are kept.
The prompt sources are pure functions of (seed, step), so the step is the data sampler's position.
Before any work: `check_output_dir` refuses a directory that holds another run, and
`check_resumable` a checkpoint written with other training settings.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfcritic.config import Config, ConfigError, TrainerConfig, keyed

# What a checkpoint does not take from the source directory: weights (written anew) and these
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_CARRIED_DIRS = ("additional_chat_templates",)  # transformers' extra chat templates
COMPLETE = "COMPLETE"
_PREFIX = "step-"


def save_hf_checkpoint(model, tokenizer_dir: Path, target: Path) -> Path:
    """Write `model` (save_pretrained) and, from `tokenizer_dir` (the source checkpoint), every
    file it has that save_pretrained did not write, weights and their indexes aside: the
    tokenizer's files whatever they are (tokenizer.json, a tiktoken or SentencePiece model, the
    chat template, the tokenizer's and the model's code for trust_remote_code)."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for source in carried_files(tokenizer_dir):
        if not (staging / source.name).exists():
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, staging / source.name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def carried_files(source: Path) -> list[Path]:
    """The entries of a checkpoint directory a checkpoint of its model carries over: every
    file but weights, their indexes and hidden files, and `_CARRIED_DIRS`."""
    return sorted(
        item
        for item in source.iterdir()
        if not item.name.startswith(".")
        and (
            item.name in _CARRIED_DIRS
            if item.is_dir()
            else not item.name.endswith(_WEIGHT_SUFFIXES) and not item.name.endswith(".index.json")
        )
    )


def publish_model(model_dir: Path, target: Path) -> Path:
    """Copy a checkpoint's Hugging Face model to `target` (the run's final model) atomically:
    the files written once for the training checkpoint, not gathered and saved again."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def checkpoints_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint of the highest step, or None."""
    found = [
        path
        for path in checkpoints_dir(output_dir).glob(f"{_PREFIX}*")
        if path.is_dir() and (path / COMPLETE).is_file() and path.name[len(_PREFIX) :].isdigit()
    ]
    return max(found, key=lambda path: int(path.name[len(_PREFIX) :]), default=None)


def write_checkpoint(output_dir: Path, step: int, write_parts: Callable[[Path], None], keep: int):
    """Call `write_parts(staging_dir)`, then make the checkpoint of `step` appear atomically and
    drop all but the newest `keep` complete ones. Returns its path."""
    root = checkpoints_dir(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{_PREFIX}{step:06d}"
    staging = root / f".{target.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    write_parts(staging)
    (staging / COMPLETE).write_text(f"{step}\n")
    _fsync_tree(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    _fsync_dir(root)
    _prune(root, keep)
    return target


def _prune(root: Path, keep: int) -> None:
    complete = sorted(
        (p for p in root.glob(f"{_PREFIX}*") if (p / COMPLETE).is_file()), key=lambda p: p.name
    )
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".{_PREFIX}*.tmp"):  # left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as stream:
                os.fsync(stream.fileno())
    for path in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise ConfigError(keyed(key, problem))


# What a run leaves in its output directory.
RUN_OUTPUTS = ("metrics.jsonl", "checkpoint", "checkpoints")


def check_output_dir(output_dir: Path, trainer: TrainerConfig) -> None:
    """Refuse an output directory that already holds a run, unless it is resumed (a complete
    training checkpoint and `trainer.resume`) or `trainer.overwrite` says to replace it: a
    second run would mix its metrics into the first one's and replace its checkpoints."""
    _require(
        not output_dir.is_file(),
        "trainer.output_dir",
        f"{str(output_dir)!r} is a file; name a directory (new or existing)",
    )
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
