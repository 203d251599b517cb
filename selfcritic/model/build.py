"""Build, load and save DeepseekV3 models (MLA + MoE) in Hugging Face format.

A preset with `path` unset is built locally from its dimensions (no downloads) and cached in a
directory named by a hash of its config, so a second run reuses it; a preset with `path` loads that
checkpoint. Left out here: meta-device parameter counts of the big presets and the checkpoint
config fix-ups for third-party models (the model/MuonClip issue deepens this module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from selfcritic.config import ModelConfig
from selfcritic.data.tokenizer import build_char_tokenizer, vocab_size

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

_COMPLETE_MARKER = ".complete"
# Config fields vLLM needs to read DeepseekV3 routing (see shared/notes/platform.md).
VLLM_ROUTING_FIELDS = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}


def deepseek_config_dict(cfg: ModelConfig) -> dict:
    """The transformers DeepseekV3Config fields for a locally built preset."""
    arch = dataclasses.asdict(cfg.arch)
    if arch["vocab_size"] < vocab_size():
        raise ValueError(
            f"model.arch.vocab_size={arch['vocab_size']} is smaller than the tokenizer's "
            f"{vocab_size()} tokens: raise it to at least {vocab_size()}"
        )
    return {
        **arch,
        **VLLM_ROUTING_FIELDS,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def prepare_model(cfg: ModelConfig, cache_dir: Path) -> Path:
    """Return a directory holding a loadable checkpoint and tokenizer, building it if needed."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.path={cfg.path!r} holds no config.json: point it at a Hugging Face "
                "checkpoint directory, or unset it to build the preset locally"
            )
        return path
    fields = deepseek_config_dict(cfg)
    key = hashlib.sha256(json.dumps([fields, cfg.seed], sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir / "models" / f"{cfg.preset}-{key}"
    if (target / _COMPLETE_MARKER).exists():
        return target
    _build_locally(fields, cfg.seed, target)
    return target


def _build_locally(fields: dict, seed: int, target: Path) -> None:
    """Initialise the model from `seed` and write it atomically (temp dir, then rename)."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, GenerationConfig

    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**fields)).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(str(staging))
    build_char_tokenizer(staging, fields["max_position_embeddings"])
    (staging / _COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def load_model(path: Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a checkpoint for training (float32 unless told otherwise), eager attention."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype or torch.float32, attn_implementation="eager"
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameters."""
    return sum(p.numel() for p in model.parameters())
