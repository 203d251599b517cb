"""Checkpoints in Hugging Face format, written atomically.

A checkpoint is written into a temporary sibling directory and renamed into place, so a reader
never sees a half-written one. Left out: optimizer state and exact resume (the run-operations
issue adds them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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
