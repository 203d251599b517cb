"""Build, load and save DeepseekV3 models (MLA + MoE) in Hugging Face format.

A preset with `path` unset is built locally from its dimensions (no downloads) and cached in a
directory named by a hash of its config, so a second run reuses it; a preset with `path` loads that
checkpoint; when its config.json lacks the routing fields vLLM needs, an overlay directory in the
cache links the checkpoint's files and carries a completed config.json (the user's directory is
never written). `meta_model` builds any preset on the meta device, for parameter counts without
memory. Left out: sharded loading for training at scale (the learner group's work).
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
from selfcritic.model.tokenizer import (
    ALPHABET,
    SPECIAL_TOKENS,
    build_char_tokenizer,
    load_phrases,
    vocab_size,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

_COMPLETE_MARKER = ".complete"
_BUILD_FORMAT = 1  # bump when _build_locally writes different files for the same recipe
# Config fields vLLM needs to read DeepseekV3 routing (see shared/notes/platform.md).
VLLM_ROUTING_FIELDS = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}


def deepseek_config_dict(cfg: ModelConfig) -> dict:
    """The transformers DeepseekV3Config fields for a locally built preset."""
    arch = dataclasses.asdict(cfg.arch)
    needed = vocab_size(load_phrases(cfg.phrases))
    if arch["vocab_size"] < needed:
        raise ValueError(
            f"model.arch.vocab_size={arch['vocab_size']} is smaller than the tokenizer's "
            f"{needed} tokens: raise it to at least {needed}"
        )
    if arch["rope_scaling"] is None:
        del arch["rope_scaling"]
    return {
        **arch,
        **VLLM_ROUTING_FIELDS,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }


def prepare_model(cfg: ModelConfig, cache_dir: Path) -> Path:
    """Return a directory holding a loadable checkpoint and tokenizer, building it if needed."""
    if cfg.path:
        return checkpoint_for_engines(Path(cfg.path).expanduser(), cache_dir)
    fields = deepseek_config_dict(cfg)
    # The key covers everything the built files depend on: a change of dimensions, seed,
    # tokenizer alphabet or phrases, or build format gets a new directory, not a stale model.
    phrases = load_phrases(cfg.phrases)
    recipe = [fields, cfg.seed, ALPHABET, SPECIAL_TOKENS, phrases, _BUILD_FORMAT]
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir / "models" / f"{cfg.preset}-{key}"
    if (target / _COMPLETE_MARKER).exists():
        return target
    _build_locally(fields, cfg.seed, phrases, target)
    return target


def _build_locally(fields: dict, seed: int, phrases: tuple[str, ...], target: Path) -> None:
    """Initialise the model from `seed` and write it atomically (temp dir, then rename)."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, GenerationConfig

    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**fields)).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(str(staging))
    build_char_tokenizer(staging, fields["max_position_embeddings"], phrases)
    (staging / _COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def checkpoint_for_engines(path: Path, cache_dir: Path) -> Path:
    """`path` itself, or an overlay with the routing fields vLLM needs added to config.json."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"model.path={str(path)!r} holds no config.json: point it at a Hugging Face "
            "checkpoint directory, or unset it to build the preset locally"
        )
    config = json.loads(config_file.read_text())
    missing = {k: v for k, v in VLLM_ROUTING_FIELDS.items() if k not in config}
    if not missing:
        return path
    key = hashlib.sha256(f"{path.resolve()}:{sorted(missing)}".encode()).hexdigest()[:12]
    overlay = cache_dir / "checkpoints" / f"{path.name}-{key}"
    overlay.mkdir(parents=True, exist_ok=True)
    for item in path.iterdir():
        link = overlay / item.name
        if item.name != "config.json" and not link.exists():
            link.symlink_to(item.resolve())
    (overlay / "config.json").write_text(json.dumps({**config, **missing}, indent=2))
    return overlay


def meta_model(cfg: ModelConfig) -> PreTrainedModel:
    """The preset's model on the meta device: shapes and counts, no memory."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    with torch.device("meta"):
        return DeepseekV3ForCausalLM(DeepseekV3Config(**deepseek_config_dict(cfg)))


def count_active_parameters(model: torch.nn.Module) -> int:
    """Parameters one token touches: one row of the input embedding, every dense, attention,
    shared-expert, norm and output-head parameter, and `num_experts_per_tok` routed experts."""
    config = model.config
    idle = config.n_routed_experts - config.num_experts_per_tok
    unused = 0
    for module in model.modules():
        if hasattr(module, "gate_up_proj"):  # the fused routed experts of one MoE layer
            per_expert = sum(p.numel() for p in module.parameters()) // config.n_routed_experts
            unused += idle * per_expert
    embedding = model.get_input_embeddings().weight
    return count_parameters(model) - unused - embedding.numel() + embedding.shape[1]


def load_model(path: Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a checkpoint for training (float32 unless told otherwise), SDPA attention."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype or torch.float32, attn_implementation="sdpa"
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameters."""
    return sum(p.numel() for p in model.parameters())
