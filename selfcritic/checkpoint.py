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
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
COMPLETE = "COMPLETE"
_PREFIX = "step-"


def save_hf_checkpoint(model, tokenizer_dir: Path, target: Path) -> Path:
    """Write `model` (save_pretrained) and the tokenizer files from `tokenizer_dir` to `target`."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging))
    for name in _TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy2(tokenizer_dir / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


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
