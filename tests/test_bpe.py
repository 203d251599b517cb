"""`model.tokenizer=bpe`: a byte-level BPE with ChatML trained on the environment's texts.

The tokenizer alone (deterministic, ChatML rendered as written out by hand, the specials at the
ids the model config names, any text round-trips), the model built with it (cached by a hash of
the texts, its vocabulary the arch's, a chat prompt encoder with `<|im_end|>` as the stop), the
errors before any work, and 2 steps of a dataset world through vLLM with it.
"""

from __future__ import annotations

import json

import pytest
from cli_runs import train_two_steps

from selfcritic.config import ArchConfig, ModelConfig
from selfcritic.model.bpe import MIN_VOCAB, train_chat_tokenizer
from selfcritic.model.build import load_tokenizer, prepare_model
from selfcritic.model.chat import prompt_encoder

TEXTS = [f"Natalia sold {a} clips in April and half as many in May." for a in range(40)]
ARCH = ArchConfig(vocab_size=400)


def test_training_is_deterministic_and_keeps_the_specials_first(tmp_path):
    first = train_chat_tokenizer(TEXTS, tmp_path / "a", 400, 256)
    train_chat_tokenizer(TEXTS, tmp_path / "b", 400, 256)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()
    ids = first.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert ids == [0, 1, 2]  # selfcritic/model/families.py: pad 0, EOS 2
    assert (first.eos_token_id, first.pad_token_id, first.bos_token_id) == (2, 0, None)
    assert len(first) <= 400
    # the texts' words are merged: a training sentence is far fewer tokens than characters
    assert len(first(TEXTS[3], add_special_tokens=False).input_ids) < len(TEXTS[3]) / 3
    for text in ("Ünïcode ✓ and tabs\t", "x" * 50, TEXTS[0]):  # byte-level: nothing is lost
        assert first.decode(first(text, add_special_tokens=False).input_ids) == text


def test_the_chat_template_is_chatml(tmp_path):
    tokenizer = train_chat_tokenizer(TEXTS, tmp_path, 400, 256)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    encode = prompt_encoder(tokenizer)  # auto: the tokenizer's template
    assert encode.chat and encode.stop_token_ids() == (2,)  # the turn's end is EOS


def test_too_small_a_vocabulary_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"vocab_size >= {MIN_VOCAB}, got 100"):
        train_chat_tokenizer(TEXTS, tmp_path, 100, 256)
    with pytest.raises(ValueError, match="model.arch.vocab_size=110 is smaller than the bpe"):
        prepare_model(ModelConfig(tokenizer="bpe"), tmp_path, lambda: TEXTS)


def test_the_model_is_built_with_it_and_cached_by_its_texts(tmp_path):
    cfg = ModelConfig(preset="bpe_nano", tokenizer="bpe", arch=ARCH)
    path = prepare_model(cfg, tmp_path, lambda: TEXTS)
    assert prepare_model(cfg, tmp_path, lambda: TEXTS) == path  # the same texts: cached
    other = prepare_model(cfg, tmp_path, lambda: TEXTS[:20])
    assert other != path  # other texts: another tokenizer, so another model
    config = json.loads((path / "config.json").read_text())
    assert config["vocab_size"] == 400 and config["eos_token_id"] == 2
    assert config.get("bos_token_id") is None  # a chat prompt starts with <|im_start|>
    tokenizer = load_tokenizer(path)
    assert tokenizer.chat_template and len(tokenizer) <= 400
    with pytest.raises(ValueError, match="needs the texts"):
        prepare_model(cfg, tmp_path / "other")


def test_bpe_with_a_checkpoint_is_refused_before_any_work(tmp_path):
    from hydra import compose, initialize_config_dir

    from selfcritic.config import ConfigError
    from selfcritic.preflight import validate
    from selfcritic.run import CONF_DIR, to_config

    overrides = ["+experiment=nano_quick", "model.tokenizer=bpe", f"model.path={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    with pytest.raises(ConfigError, match="model.tokenizer.*brings its own"):
        validate(cfg)


def test_a_dataset_world_trains_two_steps_with_a_bpe_model(tmp_path, cache_dir):
    """A user's JSONL questions, the nano model built with a BPE trained on them, ChatML
    prompts and the critic's chat template, 2 steps through vLLM: engine and learner agree."""
    rows = [{"question": f"What is {a} plus {a + 1}?", "answer": 2 * a + 1} for a in range(30)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    records = train_two_steps(
        tmp_path / "run",
        cache_dir,
        "model.tokenizer=bpe",
        "model.arch.vocab_size=512",
        "env=dataset",
        f"env.path={data}",
        "env.prompt_key=question",
        "env.reference_key=answer",
        "env.heldout_fraction=0.3",
        "reward.verifier=exact_number",
        "sampling.max_tokens=8",
        "critic.gate.source=null",
    )
    first = records[1]
    assert first["learner/logprob_diff_max"] < 1e-4
    assert first["critic/judgements"] > 0 and first["critic/skipped_too_long"] == 0
    tokenizer = load_tokenizer(tmp_path / "run" / "checkpoint")
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_a_dataset_environment_gives_its_training_texts_only(tmp_path):
    from selfcritic.config import Config
    from selfcritic.envs.registry import build_environment

    rows = [{"question": f"What is {a}+{a + 1}?", "answer": 2 * a + 1} for a in range(20)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    options = {"name": "dataset", "path": str(data), "prompt_key": "question"}
    env = build_environment(options | {"reference_key": "answer"}, Config())
    texts = env.texts()
    assert sorted(texts) == sorted([p.text for p in env.train] + [p.reference for p in env.train])
    held = {p.text for p in env.held_out()}
    assert held and not held & set(texts)  # no held-out question shapes the vocabulary
    assert len(env.train) + len(held) == 20
