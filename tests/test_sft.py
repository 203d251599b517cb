"""Supervised pairs from an environment's data (selfcritic/envs/sft.py), laid out as episodes
are: worked out by hand on the nano character tokenizer (one id per character)."""

from __future__ import annotations

import json
import random

import pytest

from selfcritic.config import Config, ConfigError
from selfcritic.envs.dataset import DatasetEnvironment, DatasetOptions
from selfcritic.envs.sft import PairsCorpus, demonstration_pairs
from selfcritic.model.chat import prompt_encoder


@pytest.fixture(scope="module")
def encode(nano_model_path):
    from transformers import AutoTokenizer

    return prompt_encoder(AutoTokenizer.from_pretrained(str(nano_model_path)))


def test_a_tool_demonstration_is_one_pair_per_turn(encode):
    tokenizer = encode.tokenizer
    ids = encode("Q: 2+3?")
    eos = tokenizer.eos_token_id

    def chars(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    pairs = demonstration_pairs(ids, ["<call>add</call>", "5"], ["\n<result>5</result>\n"], encode)
    call = (*chars("<call>add</call>"), eos)
    assert pairs[0] == (tuple(ids), call)  # the prompt, then the call and the end of the turn
    observation = chars("\n<result>5</result>\n")
    assert pairs[1] == ((*ids, *call, *observation), (*chars("5"), eos))
    assert len(call) == len("<call>add</call>") + 1  # one id per character, then EOS


def test_a_data_files_references_are_its_demonstrations(tmp_path, encode):
    data = tmp_path / "q.jsonl"
    rows = [{"q": "1+1=", "a": 2}, {"q": "2+2=", "a": 4, "d": "four"}, {"q": "3+3="}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = DatasetOptions(path=str(data), prompt_key="q", reference_key="a")
    env = DatasetEnvironment(dataclass_replace(options, heldout_fraction=0.0), Config())
    corpus = env.corpus(encode.tokenizer)
    eos = encode.tokenizer.eos_token_id
    targets = sorted(target for _, target in corpus.pairs)  # the third row has no reference
    assert targets == sorted(
        [(*encode.tokenizer("2").input_ids[-1:], eos), (*encode.tokenizer("4").input_ids[-1:], eos)]
    )
    with_demos = DatasetEnvironment(
        dataclass_replace(options, heldout_fraction=0.0, demo_key="d"), Config()
    )
    pairs = with_demos.corpus(encode.tokenizer).pairs  # only the row with a demonstration
    assert len(pairs) == 1 and pairs[0][1][:-1] == tuple(
        encode.tokenizer("four", add_special_tokens=False).input_ids
    )
    draws = corpus.ptx_batch(random.Random(0), 5)
    assert len(draws) == 5 and set(draws) <= set(corpus.pairs)


def test_a_bad_demonstration_names_its_row(tmp_path):
    data = tmp_path / "q.jsonl"
    data.write_text('{"q": "1+1=", "a": 2, "d": ["ok"]}\n{"q": "2+2=", "a": 4, "d": [1, 2]}\n')
    options = DatasetOptions(path=str(data), prompt_key="q", reference_key="a", demo_key="d")
    with pytest.raises(ConfigError, match=r"env.demo_key.*row 2: column 'd' must be a string"):
        DatasetEnvironment(options, Config())


def test_a_corpus_without_pairs_says_so():
    with pytest.raises(ValueError, match="no supervised pair"):
        PairsCorpus(list, {}, (), 4).ptx_batch(random.Random(0), 1)


def dataclass_replace(options, **changes):
    import dataclasses

    return dataclasses.replace(options, **changes)
