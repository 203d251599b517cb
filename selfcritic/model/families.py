"""Architecture families: `model.arch` mapped to a transformers config, and what each allows.

A locally built model is one of `MODEL_FAMILIES` (`model.arch.family`): deepseek_v3 (MLA + MoE,
transformers' DeepseekV3), qwen3 (dense, GQA, per-head RMSNorm on queries and keys: QK-norm) or
llama (dense, GQA). `family_config_dict` gives the transformers config fields of a family from
`model.arch` (MoE and MLA fields ignored by the dense families; `head_dim` and GQA ignored by
MLA). A checkpoint (`model.path`) is whatever its config.json's `model_type` says;
`family_of_model_type` names the family of the types we know.

QK-Clip's rule per attention layout (selfcritic/optim/qk_clip.py applies it, `qk_clip_layout`
tells it from the module): MLA scales query and key rows per head; Llama-shaped attention scales
the clipped head's query rows; QK-norm attention (Qwen3) cannot be clipped per head through its
projections, since the norm after them undoes any rescaling: an explicit `optim.qk_clip=true`
is refused for it before any work. Left out: building MoE variants of the dense families
(Qwen3-MoE, Mixtral) locally; their checkpoints load through `model.path`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from selfcritic.config import MODEL_FAMILIES, Config, ModelConfig
from selfcritic.model.bpe import MIN_VOCAB as BPE_MIN_VOCAB
from selfcritic.model.tokenizer import load_phrases, vocab_size
from selfcritic.preflight import Problems, preflight_check

# Config fields vLLM needs to read DeepseekV3 routing (see shared/notes/platform.md).
VLLM_ROUTING_FIELDS = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}
# transformers' config and model class of each family
CLASSES = {
    "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
}
# ArchConfig fields the dense families read (the rest are DeepseekV3's MoE and MLA dimensions)
DENSE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
)
# config.json model types whose attention normalises queries and keys per head after their
# projections (QK-norm): QK-Clip cannot act through the projections there
QK_NORM_MODEL_TYPES = ("qwen3", "qwen3_moe", "olmo2", "gemma3_text", "gemma3")
_SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
assert set(CLASSES) == set(MODEL_FAMILIES)


def family_config_dict(cfg: ModelConfig) -> dict:
    """The transformers config fields of `cfg.arch.family` for a locally built preset."""
    arch = dataclasses.asdict(cfg.arch)
    family = arch.pop("family")
    head_dim = arch.pop("head_dim")
    needed = BPE_MIN_VOCAB if cfg.tokenizer == "bpe" else vocab_size(load_phrases(cfg.phrases))
    if arch["vocab_size"] < needed:
        raise ValueError(
            f"model.arch.vocab_size={arch['vocab_size']} is smaller than the {cfg.tokenizer} "
            f"tokenizer's {needed} tokens: raise it to at least {needed}"
        )
    if family == "deepseek_v3":
        fields = {**arch, **VLLM_ROUTING_FIELDS}
    else:
        fields = {name: arch[name] for name in DENSE_FIELDS}
        fields["head_dim"] = head_dim or arch["hidden_size"] // arch["num_attention_heads"]
        fields["rope_scaling"] = arch["rope_scaling"]
    if fields["rope_scaling"] is None:
        del fields["rope_scaling"]
    # the BPE's specials come first: <|endoftext|> (pad) 0, <|im_start|> 1, <|im_end|> (EOS)
    # 2; a chat prompt starts with <|im_start|> from its template, not with a BOS
    special = _SPECIAL_IDS | ({"bos_token_id": None} if cfg.tokenizer == "bpe" else {})
    return {**fields, **special, "tie_word_embeddings": False, "torch_dtype": "float32"}


def model_from_fields(family: str, fields: dict):
    """A freshly initialised transformers model of `family` (on the current default device)."""
    import transformers

    config_class, model_class = (getattr(transformers, name) for name in CLASSES[family])
    return model_class(config_class(**fields))


def family_of_model_type(model_type: str | None) -> str | None:
    """The family of a config.json `model_type` (kimi_k2 is DeepseekV3-shaped); None: unknown."""
    return {"kimi_k2": "deepseek_v3"}.get(model_type, model_type) if model_type else None


def checkpoint_model_type(path: str | Path) -> str | None:
    """`model_type` of the checkpoint's config.json; None where it has none (or no file)."""
    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text()).get("model_type")


def model_type_of(cfg: ModelConfig) -> str | None:
    """The run's model type: the checkpoint's where `model.path` is set, else the family's."""
    return checkpoint_model_type(cfg.path) if cfg.path else cfg.arch.family


@preflight_check
def _grouped_query_heads(cfg: Config, problems: Problems) -> None:
    """`model.arch.num_key_value_heads` divides `model.arch.num_attention_heads` (qwen3,
    llama: each key/value head serves a whole group of query heads)."""
    arch = cfg.model.arch
    if cfg.model.path or arch.family == "deepseek_v3" or arch.num_key_value_heads < 1:
        return
    problems.require(
        arch.num_attention_heads % arch.num_key_value_heads == 0,
        "model.arch.num_key_value_heads",
        f"{arch.num_key_value_heads} does not divide num_attention_heads="
        f"{arch.num_attention_heads}: choose a divisor (equal for plain multi-head attention)",
    )


@preflight_check
def _bpe_is_built_here(cfg: Config, problems: Problems) -> None:
    """`model.tokenizer=bpe` trains the tokenizer of a locally built model: a checkpoint
    (`model.path`) brings its own."""
    problems.require(
        cfg.model.tokenizer != "bpe" or not cfg.model.path,
        "model.tokenizer",
        f"bpe trains the tokenizer of a locally built model, but model.path={cfg.model.path!r} "
        "brings its own: leave model.tokenizer unset (char) with model.path",
    )


@preflight_check
def _qk_clip_applies(cfg: Config, problems: Problems) -> None:
    """`optim.qk_clip=true` only for attention QK-Clip can act on: not QK-norm attention
    (qwen3), whose per-head norms undo any rescaling of the query and key projections."""
    model_type = model_type_of(cfg.model)
    problems.require(
        cfg.optim.qk_clip is not True or model_type not in QK_NORM_MODEL_TYPES,
        "optim.qk_clip",
        f"QK-Clip cannot act on {model_type} attention: its per-head RMSNorm on queries and "
        "keys (QK-norm) undoes any rescaling of q_proj/k_proj (its logits grow only through "
        "the norms' shared weights); set optim.qk_clip=false (or leave it unset: it is then "
        "on wherever it applies)",
    )
