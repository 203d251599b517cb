"""Build, load and save models in Hugging Face format: DeepseekV3 (MLA + MoE), Qwen3, Llama.

A preset with `path` unset is built locally from its family and dimensions (no downloads;
selfcritic/model/families.py maps them) and cached in a directory named by a hash of its config,
so a second run reuses it; a preset with `path` loads that checkpoint, of any causal LM
transformers and vLLM know; when a DeepseekV3 checkpoint's config.json lacks the routing fields
vLLM needs, an overlay directory in the cache links the checkpoint's files and carries a
completed config.json (the user's directory is never written). `meta_model` builds any preset on
the meta device, for parameter counts without memory. Left out: sharded loading for training at
scale (the learner group's work).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from selfcritic.config import ModelConfig
from selfcritic.model.bpe import CHATML, train_chat_tokenizer
from selfcritic.model.bpe import SPECIAL_TOKENS as BPE_SPECIALS
from selfcritic.model.families import (
    VLLM_ROUTING_FIELDS,
    family_config_dict,
    family_of_model_type,
    model_from_fields,
)
from selfcritic.model.tokenizer import ALPHABET, SPECIAL_TOKENS, build_char_tokenizer, load_phrases

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

_COMPLETE_MARKER = ".complete"
_BUILD_FORMAT = 1  # bump when _build_locally writes different files for the same recipe


def deepseek_config_dict(cfg: ModelConfig) -> dict:
    """The transformers DeepseekV3Config fields for a locally built preset (whatever its
    `arch.family` says: for tests and tools that want the DeepseekV3 form of `arch`)."""
    return family_config_dict(
        dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, family="deepseek_v3"))
    )


def prepare_model(
    cfg: ModelConfig, cache_dir: Path, texts: Callable[[], list[str]] | None = None
) -> Path:
    """Return a directory holding a loadable checkpoint and tokenizer, building it if needed.
    `texts` gives the training texts of a `model.tokenizer=bpe` tokenizer (the environment's)."""
    if cfg.path:
        return checkpoint_for_engines(Path(cfg.path).expanduser(), cache_dir)
    family, fields = cfg.arch.family, family_config_dict(cfg)
    # The key covers everything the built files depend on: a change of family, dimensions,
    # seed, tokenizer (its alphabet and phrases, or the BPE's texts), or build format gets a new
    # directory, not a stale model.
    if cfg.tokenizer == "bpe":
        if texts is None:
            raise ValueError("model.tokenizer=bpe needs the texts to train it on")
        corpus = texts()
        digest = hashlib.sha256("\0".join(corpus).encode()).hexdigest()
        recipe = [family, fields, cfg.seed, "bpe", BPE_SPECIALS, CHATML, digest, _BUILD_FORMAT]

        def tokenizer(directory: Path) -> None:
            train_chat_tokenizer(
                corpus, directory, fields["vocab_size"], fields["max_position_embeddings"]
            )
    else:
        phrases = load_phrases(cfg.phrases)
        recipe = [family, fields, cfg.seed, ALPHABET, SPECIAL_TOKENS, phrases, _BUILD_FORMAT]

        def tokenizer(directory: Path) -> None:
            build_char_tokenizer(directory, fields["max_position_embeddings"], phrases)

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir / "models" / f"{cfg.preset}-{key}"
    if (target / _COMPLETE_MARKER).exists():
        return target
    _build_locally(family, fields, cfg.seed, tokenizer, target)
    return target


def _build_locally(
    family: str, fields: dict, seed: int, tokenizer: Callable[[Path], None], target: Path
) -> None:
    """Initialise the model from `seed`, write it and its tokenizer (`tokenizer(directory)`)
    atomically (temp dir, then rename)."""
    import torch
    from transformers import GenerationConfig

    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    torch.manual_seed(seed)
    model = model_from_fields(family, fields).to(torch.float32)
    ids = {k: fields[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(str(staging))
    tokenizer(staging)
    (staging / _COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def checkpoint_for_engines(path: Path, cache_dir: Path) -> Path:
    """`path` itself, or, for a DeepseekV3 checkpoint without them, an overlay with the routing
    fields vLLM needs added to config.json (other model types are served as they are)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"model.path={str(path)!r} holds no config.json: point it at a Hugging Face "
            "checkpoint directory, or unset it to build the preset locally"
        )
    config = json.loads(config_file.read_text())
    if family_of_model_type(config.get("model_type")) != "deepseek_v3":
        return path
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

    with torch.device("meta"):
        return model_from_fields(cfg.arch.family, family_config_dict(cfg))


def count_active_parameters(model: torch.nn.Module) -> int:
    """Parameters one token touches: one row of the input embedding, every dense, attention,
    shared-expert, norm and output-head parameter, and `num_experts_per_tok` routed experts
    (a dense model: all but the rest of the embedding)."""
    import torch

    config = model.config
    routed = getattr(config, "n_routed_experts", None) or getattr(config, "num_experts", None)
    unused = 0
    if routed:
        idle = routed - config.num_experts_per_tok
        for module in model.modules():
            fused = getattr(module, "gate_up_proj", None)
            if isinstance(fused, torch.Tensor) and fused.ndim == 3:
                # the fused routed experts of one MoE layer
                per_expert = sum(p.numel() for p in module.parameters()) // routed
                unused += idle * per_expert
    embedding = model.get_input_embeddings().weight
    return count_parameters(model) - unused - embedding.numel() + embedding.shape[1]


def load_model(
    path: Path, dtype: torch.dtype | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load a checkpoint for training (float32 unless told otherwise), SDPA attention;
    `trust_remote_code` (model.trust_remote_code) runs the checkpoint's own model code."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=dtype or torch.float32,
        attn_implementation="sdpa",
        trust_remote_code=trust_remote_code,
    )


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """A checkpoint's tokenizer; `trust_remote_code` runs its own tokenizer code."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)


def count_parameters(model: torch.nn.Module) -> int:
    """Total number of parameters."""
    return sum(p.numel() for p in model.parameters())
