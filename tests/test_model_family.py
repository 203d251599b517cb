"""Other architecture families: Qwen3- and Llama-shaped models built locally, trained through vLLM.

Reference logits come from a full-matrix attention written here, pairing query head h with key
head h // group by index (not through the capture's own head expansion under test); parameter
counts are worked out by hand from the preset's dimensions.
"""

from __future__ import annotations

import json

import pytest
import torch
from cli_runs import read_jsonl
from hydra import compose, initialize_config_dir
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from selfcritic.config import ConfigError, OptimConfig
from selfcritic.model.attention_capture import AttentionLogitCapture
from selfcritic.model.build import (
    count_active_parameters,
    count_parameters,
    load_model,
    meta_model,
    prepare_model,
)
from selfcritic.model.presets import load_preset
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.optim.qk_clip import apply_qk_clip, clip_query_heads
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config
from selfcritic.trainer import Trainer

REFERENCE = "test_family_full_matrix"
_logits: dict[int, torch.Tensor] = {}  # layer -> [B, H, Q, K] masked scores of the last forward


def _reference_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Every head's masked score matrix, with Llama's softmax scale 1/sqrt(head_dim)."""
    heads, key_heads = query.shape[1], key.shape[1]
    group = heads // key_heads
    scores = torch.stack(
        [query[:, h].float() @ key[:, h // group].float().transpose(-1, -2) for h in range(heads)],
        dim=1,
    ) * (module.head_dim**-0.5)
    allowed = attention_mask
    if allowed is None:
        q, k = scores.shape[-2:]
        allowed = torch.ones(q, k, dtype=torch.bool).tril(diagonal=k - q)[None, None]
    real = allowed[:, 0].diagonal(dim1=-2, dim2=-1)[:, None, :, None]
    _logits[module.layer_idx] = scores.detach().masked_fill(~(allowed & real), float("-inf"))
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, **kwargs
    )


AttentionInterface.register(REFERENCE, _reference_attention)
AttentionMaskInterface.register(REFERENCE, sdpa_mask)


def tiny_llama(key_heads: int, seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=key_heads,
        head_dim=16,
        vocab_size=110,
        max_position_embeddings=64,
        attention_bias=True,  # a clipped head's query bias must scale with its rows
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).train()
    with torch.no_grad():  # grow the logits so that heads differ widely
        for layer in model.model.layers:
            q_proj = layer.self_attn.q_proj
            q_proj.weight.mul_(torch.linspace(1, 30, q_proj.weight.shape[0])[:, None])
            q_proj.bias.normal_(0, 1.0)
            layer.self_attn.k_proj.bias.normal_(0, 1.0)
    return model


def _batch():
    ids = torch.randint(3, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    return ids, mask


def _attention_inputs(model, ids, mask) -> dict:
    """Each attention module's keyword inputs during one forward, to re-run it alone."""
    recorded, handles = {}, []
    for layer in model.model.layers:

        def hook(mod, args, kwargs):
            recorded[mod.layer_idx] = (
                mod,
                {k: v for k, v in kwargs.items() if k != "past_key_values"},
            )

        handles.append(layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True))
    model(input_ids=ids, attention_mask=mask)
    for handle in handles:
        handle.remove()
    return recorded


def _layer_logits(module, kwargs) -> torch.Tensor:
    """[B, H, Q, K] masked scores of one attention module re-run on recorded inputs."""
    module.config._attn_implementation = REFERENCE
    with torch.no_grad():
        module(**kwargs)
    return _logits[module.layer_idx]


@pytest.mark.parametrize("key_heads", [2, 4])  # grouped-query (2 heads per key head), and MHA
def test_clipping_a_llama_head_scales_its_logits_by_gamma_and_leaves_the_others(key_heads):
    model = tiny_llama(key_heads)
    ids, mask = _batch()
    module, kwargs = _attention_inputs(model, ids, mask)[1]
    before = _layer_logits(module, kwargs).clone()
    snapshot = {n: p.detach().clone() for n, p in module.named_parameters()}
    head, gamma = 1, 0.37
    factors = torch.ones(4)
    factors[head] = gamma
    assert clip_query_heads(module, factors) == 1
    after = _layer_logits(module, kwargs)
    finite = torch.isfinite(before[:, head])
    scaled, was = after[:, head][finite], before[:, head][finite]
    assert torch.allclose(scaled, gamma * was, rtol=1e-5, atol=1e-6 * float(was.abs().max()))
    peak_before, peak_after = before[:, head].amax(), after[:, head].amax()
    assert torch.allclose(peak_after, gamma * peak_before, rtol=1e-5)
    others = [h for h in range(4) if h != head]
    assert torch.equal(after[:, others], before[:, others])  # bit for bit
    rows = slice(head * 16, (head + 1) * 16)
    for name, param in module.named_parameters():
        changed = (param != snapshot[name]).reshape(param.shape[0], -1).any(dim=1)
        if name.startswith("q_proj") or (name.startswith("k_proj") and key_heads == 4):
            assert changed[rows].all() and not changed[: rows.start].any()
            assert not changed[rows.stop :].any(), name
        else:  # the shared key head (grouped-query), values, output: untouched
            assert not changed.any(), name
    if key_heads == 2:  # grouped-query: the query rows take gamma whole
        assert torch.allclose(module.q_proj.weight[rows], gamma * snapshot["q_proj.weight"][rows])
    else:  # MHA: sqrt(gamma) on each side
        root = gamma**0.5
        assert torch.allclose(module.k_proj.weight[rows], root * snapshot["k_proj.weight"][rows])


def test_capture_records_the_real_llama_head_maxima_under_grouped_query_attention():
    model = tiny_llama(key_heads=2)
    ids, mask = _batch()
    model.set_attn_implementation(REFERENCE)
    model(input_ids=ids, attention_mask=mask)
    expected = {layer: scores.amax(dim=(0, 2, 3)) for layer, scores in _logits.items()}
    capture = AttentionLogitCapture(block_size=5).install(model)
    model(input_ids=ids, attention_mask=mask)
    assert set(capture.max_logits) == {0, 1} and capture.heads == {0: 4, 1: 4}
    for layer, values in expected.items():
        assert torch.allclose(capture.max_logits[layer], values, rtol=1e-5, atol=1e-6)


def test_qk_clip_caps_every_llama_head_at_tau():
    model = tiny_llama(key_heads=2)
    ids, mask = _batch()
    inputs = _attention_inputs(model, ids, mask)
    before = {layer: _layer_logits(m, kw).amax(dim=(0, 2, 3)) for layer, (m, kw) in inputs.items()}
    tau = float(torch.cat(list(before.values())).median())
    metrics = apply_qk_clip(model, before, tau)
    assert 0 < metrics["muonclip/heads_clipped"] < 8
    for layer, (module, kwargs) in inputs.items():
        after = _layer_logits(module, kwargs).amax(dim=(0, 2, 3))
        assert torch.allclose(after, torch.clamp(before[layer], max=tau), rtol=1e-5)


@pytest.mark.parametrize(
    ("preset", "architecture", "norms_per_layer"),
    [("nano_qwen3", "Qwen3ForCausalLM", 2 * 256 + 2 * 64), ("nano_llama", "LlamaForCausalLM", 512)],
)
def test_dense_presets_build_their_family(preset, architecture, norms_per_layer, cache_dir):
    cfg = load_preset(preset)
    path = prepare_model(cfg, cache_dir)
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [architecture]
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert (config["head_dim"], config["hidden_size"], config["intermediate_size"]) == (
        64,
        256,
        768,
    )
    assert config["rope_parameters"]["rope_theta"] == 10000.0 and config["vocab_size"] == 110
    assert not {"n_routed_experts", "kv_lora_rank", "topk_method"} & set(config)  # no MoE, MLA
    # by hand: q, o 256x256; k, v 256x128; MLP 3 x 256x768; norms; embedding and head 110x256
    per_layer = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768 + norms_per_layer
    total = 4 * per_layer + 2 * 110 * 256 + 256
    model = load_model(path)
    assert count_parameters(model) == count_parameters(meta_model(cfg)) == total
    assert count_active_parameters(model) == total - 110 * 256 + 256  # one embedding row
    # the family is part of the cache key: the same dimensions as Llama are another model
    other = "llama" if cfg.arch.family == "qwen3" else "qwen3"
    cfg.arch.family = other
    assert prepare_model(cfg, cache_dir) != path
    # a checkpoint of this family through model.path is served as it is, no overlay
    cfg.path = str(path)
    assert prepare_model(cfg, cache_dir / "elsewhere") == path


def test_dense_models_group_matrices_to_muon_and_have_no_routers(cache_dir):
    model = load_model(prepare_model(load_preset("nano_qwen3"), cache_dir))
    optimizer = build_muonclip(model, OptimConfig())
    muon, adamw = set(optimizer.groups["muon"]), set(optimizer.groups["adamw"])
    prefix = "model.layers.0."
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj"):
        assert f"{prefix}{name}.weight" in muon
    for name in ("model.embed_tokens.weight", "lm_head.weight", f"{prefix}self_attn.q_norm.weight"):
        assert name in adamw
    assert len(muon) == 4 * 7  # q, k, v, o, gate, up, down per layer
    assert optimizer.capture is None  # unset optim.qk_clip: not on QK-norm attention
    assert optimizer.balancer.routers == {}
    model(
        input_ids=torch.tensor([[1, 5, 6, 7]]), labels=torch.tensor([[1, 5, 6, 7]])
    ).loss.backward()
    metrics = optimizer.step()
    assert metrics == {}  # nothing clipped, no router to balance
    with pytest.raises(ConfigError, match="optim.qk_clip"):
        build_muonclip(model, OptimConfig(qk_clip=True))
    llama = load_model(prepare_model(load_preset("nano_llama"), cache_dir))
    assert build_muonclip(llama, OptimConfig()).capture is not None  # where it applies: on


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_preflight_refuses_qk_clip_for_qk_norm_attention(cache_dir):
    with pytest.raises(
        ConfigError, match=r"config key 'optim.qk_clip': QK-Clip cannot act on qwen3"
    ):
        validate(_config("model=nano_qwen3", "optim.qk_clip=true"))
    validate(_config("model=nano_qwen3"))  # unset: off there, no complaint
    validate(_config("model=nano_qwen3", "optim.qk_clip=false"))
    validate(_config("model=nano_llama", "optim.qk_clip=true"))
    validate(_config("optim.qk_clip=true"))  # DeepseekV3's MLA
    # a Qwen3 checkpoint through model.path, whatever model.arch says
    checkpoint = prepare_model(load_preset("nano_qwen3"), cache_dir)
    with pytest.raises(ConfigError, match="optim.qk_clip"):
        validate(_config(f"model.path={checkpoint}", "optim.qk_clip=true"))
    with pytest.raises(ConfigError, match="model.arch.num_key_value_heads"):
        validate(_config("model=nano_llama", "model.arch.num_key_value_heads=3"))


def _two_steps_with_parity(out, cache_dir, preset: str) -> list[dict]:
    """2 steps of `+experiment=nano_quick model=PRESET` through vLLM, in this process; the
    engine's logprobs checked each step (step 2's after the first weight sync)."""
    cfg = _config(
        "+experiment=nano_quick",
        f"model={preset}",
        "trainer.steps=2",
        "learner.logprob_check_every=1",
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
    )
    validate(cfg)
    Trainer(cfg, out).run()
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["learner/logprob_diff_max"] < 1e-4  # DeepseekV3's tolerance (test_e2e)
        assert torch.isfinite(torch.tensor(record["learner/loss"]))
        print(
            preset, "step", record["step"], "logprob_diff_max", record["learner/logprob_diff_max"]
        )
    assert [r["weight_version"] for r in records] == [1, 2]
    assert records[-1]["learner/grad_norm"] > 0
    trained = load_model(out / "checkpoint")
    initial = load_model(prepare_model(load_preset(preset), cache_dir))
    assert type(trained).__name__ == type(initial).__name__
    assert any(
        not torch.equal(a, b)
        for a, b in zip(trained.parameters(), initial.parameters(), strict=True)
    )
    return records


def test_qwen3_trains_two_steps_through_vllm_with_logprob_parity(tmp_path, cache_dir):
    records = _two_steps_with_parity(tmp_path, cache_dir, "nano_qwen3")
    assert not any(key.startswith(("muonclip/", "moe/")) for key in records[-1])


@pytest.mark.slow
def test_llama_trains_two_steps_through_vllm_with_logprob_parity(tmp_path, cache_dir):
    records = _two_steps_with_parity(tmp_path, cache_dir, "nano_llama")
    assert records[-1]["muonclip/max_logit"] > 0  # QK-Clip's capture runs on Llama attention
    assert not any(key.startswith("moe/") for key in records[-1])
