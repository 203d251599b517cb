"""The nano model and tokenizer: built locally, cached, convertible to checkpoint names."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from selfcritic.config import ModelConfig
from selfcritic.envs.nano.phrases import STOCK_PHRASES
from selfcritic.model.build import count_parameters, load_model, prepare_model
from selfcritic.rollout.weights import to_checkpoint_names

# the nano world's phrases with the last one changed (as many: the vocabulary keeps its size)
OTHER_PHRASES = (*STOCK_PHRASES[:-1], " Hmm.")


def test_nano_model_has_the_real_architecture(nano_model_path):
    config = json.loads((nano_model_path / "config.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert (config["kv_lora_rank"], config["qk_rope_head_dim"]) == (512, 64)
    assert config["n_shared_experts"] == 1 and config["n_routed_experts"] == 8
    assert (config["topk_method"], config["scoring_func"]) == ("noaux_tc", "sigmoid")
    assert 4_000_000 < count_parameters(load_model(nano_model_path)) < 6_000_000


def test_second_prepare_reuses_the_cache(nano_model_path, cache_dir):
    before = (nano_model_path / "model.safetensors").stat().st_mtime_ns
    again = prepare_model(ModelConfig(), cache_dir)
    assert again == nano_model_path
    assert (again / "model.safetensors").stat().st_mtime_ns == before


def test_tokenizer_round_trips_text(nano_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    text = "Q: 12+7=\nA: 19. Great question!"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text
    phrased = " Great! I think 19 you know"  # each stock phrase is one token
    ids = tokenizer(phrased, add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == [
        " ",
        "Great! ",
        "I think ",
        "1",
        "9",
        " you know",
    ]
    assert tokenizer.decode(ids) == phrased
    assert tokenizer.eos_token_id == 2 and tokenizer.bos_token_id == 1


def test_checkpoint_names_match_what_transformers_saves(nano_model_path):
    """Our live conversion of fused experts equals transformers' own save_pretrained output."""
    saved = load_file(str(nano_model_path / "model.safetensors"))
    converted = to_checkpoint_names(load_model(nano_model_path).state_dict())
    assert set(converted) == set(saved)
    for name, tensor in saved.items():
        assert converted[name].equal(tensor), name


def test_checkpoint_without_routing_fields_gets_an_overlay(nano_model_path, tmp_path):
    """vLLM needs topk_method/scoring_func; the user's directory is never written."""
    user_dir = tmp_path / "user-checkpoint"
    user_dir.mkdir()
    config = json.loads((nano_model_path / "config.json").read_text())
    for key in ("topk_method", "scoring_func"):
        config.pop(key)
    (user_dir / "config.json").write_text(json.dumps(config))
    (user_dir / "model.safetensors").symlink_to(nano_model_path / "model.safetensors")
    overlay = prepare_model(ModelConfig(path=str(user_dir)), tmp_path / "cache")
    assert overlay != user_dir
    fixed = json.loads((overlay / "config.json").read_text())
    assert (fixed["topk_method"], fixed["scoring_func"]) == ("noaux_tc", "sigmoid")
    assert "topk_method" not in json.loads((user_dir / "config.json").read_text())
    assert load_model(overlay).config.n_routed_experts == 8  # weights reachable through links
    complete = prepare_model(ModelConfig(path=str(nano_model_path)), tmp_path / "cache")
    assert complete == nano_model_path  # nothing to add: used as it is


def test_cache_key_follows_the_recipe(nano_model_path, cache_dir, monkeypatch):
    """Another seed, or another tokenizer alphabet or phrase list, never reuses a cached model."""
    from selfcritic.model import build

    assert prepare_model(ModelConfig(seed=1), cache_dir) != nano_model_path
    monkeypatch.setattr(build, "ALPHABET", (*build.ALPHABET, "\t"))
    assert prepare_model(ModelConfig(), cache_dir) != nano_model_path
    monkeypatch.undo()
    other = ModelConfig(phrases="test_model:OTHER_PHRASES")
    assert prepare_model(other, cache_dir) != nano_model_path
