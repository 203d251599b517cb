"""MuonClip: attention-logit capture, QK-Clip, router balancing, presets, schedulers.

Reference maxima come from a plain full-matrix attention written here (the eager way), not from
the blockwise capture under test.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import AttentionInterface, DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from selfcritic.config import ArchConfig, ModelConfig, OptimConfig
from selfcritic.model.attention_capture import AttentionLogitCapture
from selfcritic.model.build import (
    count_active_parameters,
    count_parameters,
    deepseek_config_dict,
    meta_model,
)
from selfcritic.model.presets import load_preset
from selfcritic.model.router_balance import RouterBalancer
from selfcritic.optim.muon import Muon
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.optim.qk_clip import apply_qk_clip

REFERENCE = "test_full_matrix_record"
_reference_maxima: dict[int, torch.Tensor] = {}
_expected_scale: dict[str, float] = {}


def _reference_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Full score matrix, masked, max per head over allowed pairs of real queries."""
    scale = _expected_scale.get("value", scaling)
    scores = (query.detach().float() @ key.detach().float().transpose(-1, -2)) * scale  # [B,H,Q,K]
    allowed = attention_mask
    if allowed is None:
        q, k = scores.shape[-2:]
        allowed = torch.ones(q, k, dtype=torch.bool).tril(diagonal=k - q)[None, None]
    real = allowed[:, 0].diagonal(dim1=-2, dim2=-1)[:, None, :, None]
    masked = scores.masked_fill(~(allowed & real), float("-inf"))
    _reference_maxima[module.layer_idx] = masked.amax(dim=(0, 2, 3))
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, **kwargs
    )


AttentionInterface.register(REFERENCE, _reference_attention)
AttentionMaskInterface.register(REFERENCE, sdpa_mask)


def tiny_model(q_lora_rank: int | None = 24, rope_scaling=None, seed: int = 0):
    arch = ArchConfig(
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=2,
        n_routed_experts=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=q_lora_rank,
        qk_nope_head_dim=16,
        v_head_dim=16,
        rope_scaling=rope_scaling,
        max_position_embeddings=4096,
    )
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(DeepseekV3Config(**deepseek_config_dict(ModelConfig(arch=arch))))
    return model.train()


def _batch(padded: bool):
    ids = torch.randint(3, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 8:] = 0
        mask[2, 5:] = 0
    return ids, mask


def _reference(model, ids, mask) -> dict[int, torch.Tensor]:
    previous = model.config._attn_implementation
    model.set_attn_implementation(REFERENCE)
    _reference_maxima.clear()
    model(input_ids=ids, attention_mask=mask)
    model.set_attn_implementation(previous)
    return dict(_reference_maxima)


@pytest.mark.parametrize("padded", [False, True])
def test_capture_matches_full_matrix_reference_blockwise(padded):
    model = tiny_model()
    ids, mask = _batch(padded)
    expected = _reference(model, ids, mask)
    capture = AttentionLogitCapture(block_size=5).install(model)  # 12 queries: 3 uneven blocks
    model(input_ids=ids, attention_mask=mask)
    assert set(capture.max_logits) == {0, 1}
    for layer, values in expected.items():
        assert torch.allclose(capture.max_logits[layer], values, rtol=1e-5, atol=1e-6)
    capture.reset()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    model.eval()
    model(input_ids=ids, attention_mask=mask)
    assert capture.max_logits == {}  # no-grad and eval passes record nothing


def test_capture_uses_the_yarn_softmax_scale():
    yarn = {
        "type": "yarn",
        "factor": 40.0,
        "original_max_position_embeddings": 64,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    }
    model = tiny_model(rope_scaling=yarn)
    mscale = 0.1 * 1.0 * math.log(40.0) + 1.0  # DeepSeek's yarn_get_mscale(factor, mscale_all_dim)
    _expected_scale["value"] = (16 + 64) ** -0.5 * mscale**2
    try:
        ids, mask = _batch(padded=False)
        expected = _reference(model, ids, mask)
    finally:
        _expected_scale.clear()
    capture = AttentionLogitCapture().install(model)
    model(input_ids=ids, attention_mask=mask)
    for layer, values in expected.items():
        assert torch.allclose(capture.max_logits[layer], values, rtol=1e-5)


def _attention_inputs(model, ids, mask):
    """Each attention module's inputs during one forward, to re-run layers on the same batch."""
    recorded, handles = {}, []
    for module in model.modules():
        if hasattr(module, "kv_b_proj"):

            def hook(mod, args, kwargs):
                kept = {k: v for k, v in kwargs.items() if k != "past_key_values"}
                recorded[mod.layer_idx] = (mod, kept)

            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    model(input_ids=ids, attention_mask=mask)
    for handle in handles:
        handle.remove()
    return recorded


@pytest.mark.parametrize("q_lora_rank", [24, None])
def test_qk_clip_caps_each_head_at_tau_and_touches_only_its_rows(q_lora_rank):
    model = tiny_model(q_lora_rank=q_lora_rank)
    with torch.no_grad():  # grow the logits so that heads differ widely
        for module in model.modules():
            if hasattr(module, "kv_b_proj"):
                query = module.q_b_proj if q_lora_rank else module.q_proj
                query.weight.mul_(torch.linspace(1, 30, query.weight.shape[0])[:, None])
    ids, mask = _batch(padded=True)
    inputs = _attention_inputs(model, ids, mask)
    before = _reference(model, ids, mask)
    tau = float(torch.cat(list(before.values())).detach().median())
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = apply_qk_clip(model, before, tau)
    assert 0 < metrics["muonclip/heads_clipped"] < 8

    model.set_attn_implementation(REFERENCE)
    for layer, (module, kwargs) in inputs.items():  # same layer inputs as before the clip
        _reference_maxima.clear()
        with torch.no_grad():
            module(**kwargs)
        after = _reference_maxima[layer]
        assert torch.allclose(after, torch.clamp(before[layer], max=tau), rtol=1e-4)

    for name, param in model.named_parameters():
        old = snapshot[name]
        if name.endswith(("q_b_proj.weight", "q_proj.weight", "kv_b_proj.weight")):
            layer = int(name.split(".")[2])
            per_head = (param - old).view(4, -1, old.shape[-1]).abs().amax(dim=(1, 2)) > 0
            assert torch.equal(per_head, before[layer] > tau), name
            if "kv_b_proj" in name:  # value rows (after the 16 key rows of each head) untouched
                assert torch.equal(param.view(4, 32, -1)[:, 16:], old.view(4, 32, -1)[:, 16:])
        else:
            assert torch.equal(param, old), name  # incl. the shared rotary key kv_a_proj_with_mqa


def test_expert_muon_equals_torch_muon_per_matrix():
    """Fused [E, 2I, H] gate_up and [E, H, I] down: each expert's gate, up and down matrix is
    updated as torch.optim.Muon updates that matrix alone."""
    experts, inter, hidden = 3, 8, 12
    gen = torch.Generator().manual_seed(0)
    gate_up = torch.randn(experts, 2 * inter, hidden, generator=gen)
    down = torch.randn(experts, hidden, inter, generator=gen)
    grads = [
        (torch.randn(gate_up.shape, generator=gen), torch.randn(down.shape, generator=gen))
        for _ in range(3)
    ]
    ours_gu, ours_dn = gate_up.clone(), down.clone()
    muon = Muon(
        [{"params": [ours_gu], "splits": 2}, {"params": [ours_dn]}],
        lr=0.02,
        ns_dtype=torch.bfloat16,
    )
    for g_gu, g_dn in grads:
        ours_gu.grad, ours_dn.grad = g_gu.clone(), g_dn.clone()
        muon.step()
    for e in range(experts):
        matrices = [
            (ours_gu[e, :inter], gate_up[e, :inter], [g[0][e, :inter] for g in grads]),
            (ours_gu[e, inter:], gate_up[e, inter:], [g[0][e, inter:] for g in grads]),
            (ours_dn[e], down[e], [g[1][e] for g in grads]),
        ]
        for ours, start, matrix_grads in matrices:
            single = start.clone()
            reference = torch.optim.Muon([single], lr=0.02, adjust_lr_fn="match_rms_adamw")
            for grad in matrix_grads:
                single.grad = grad.clone()
                reference.step()
            assert torch.allclose(ours, single, atol=2e-3)


def test_skewed_router_load_imbalance_falls():
    model = tiny_model()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "e_score_correction_bias"):
                # tokens disagree about experts, but expert 0 is chosen for almost every token
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.1)
                module.e_score_correction_bias[0] = 0.4
    balancer = RouterBalancer(model, update_rate=0.02)
    ids = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(2))
    imbalance = []
    for _ in range(30):
        model(input_ids=ids)
        imbalance.append(balancer.step()["moe/imbalance_max"])
    assert imbalance[0] > 1.8  # expert 0 takes about half of the 2 picks of 4 experts
    assert imbalance[-1] < 1.2
    with torch.no_grad():
        model(input_ids=ids)
    assert balancer.step() == {}  # no-grad forwards are not counted


def test_lr_scheduler_drives_both_optimizers():
    model = tiny_model()
    optimizer = build_muonclip(model, OptimConfig(muon_lr=0.02, adamw_lr=0.002))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    scheduler.step()
    assert optimizer.optimizers["muon"].param_groups[0]["lr"] == pytest.approx(0.01)
    assert optimizer.optimizers["adamw"].param_groups[0]["lr"] == pytest.approx(0.001)


def _step_at_rate(optimizer, model, base_rates: list[float], scale: float) -> None:
    """Write `scale` x the base rates through the wrapper (as the learner's schedule does), then
    one step on fixed gradients."""
    for group, base in zip(optimizer.param_groups, base_rates, strict=True):
        group["lr"] = base * scale
    for param in model.parameters():
        param.grad = torch.full_like(param, 0.01)
    optimizer.step()


def _state(model, optimizer) -> dict:
    """What the learner group saves: DCP's views of the model and of both inner optimizers."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    weights, optim = get_state_dict(model, list(optimizer.optimizers.values()))
    return copy.deepcopy({"model": weights, "optim": optim, "wrapper": optimizer.state_dict()})


@pytest.mark.parametrize("reload", ["MuonClip.load_state_dict", "dcp set_state_dict"])
def test_rates_written_after_a_reload_reach_the_inner_optimizers(reload):
    """A resumed run reloads the inner optimizers (torch.distributed.checkpoint's set_state_dict
    in the learner group, which gives them new group dicts); the schedule's later rates must
    still reach them. The next step equals, bit for bit, that of a run that never stopped."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    cfg = OptimConfig(muon_lr=0.02, adamw_lr=0.002)
    straight_model = tiny_model()
    straight = build_muonclip(straight_model, cfg)
    bases = [group["lr"] for group in straight.param_groups]
    _step_at_rate(straight, straight_model, bases, 1.0)
    saved = _state(straight_model, straight)
    _step_at_rate(straight, straight_model, bases, 0.25)

    model = tiny_model(seed=1)  # other weights: all must come from the checkpoint
    resumed = build_muonclip(model, cfg)
    if reload == "MuonClip.load_state_dict":
        model.load_state_dict(saved["model"])
        resumed.load_state_dict(saved["wrapper"])
    else:
        inner = list(resumed.optimizers.values())
        set_state_dict(
            model, inner, model_state_dict=saved["model"], optim_state_dict=saved["optim"]
        )
    _step_at_rate(resumed, model, bases, 0.25)
    assert resumed.optimizers["muon"].param_groups[0]["lr"] == 0.02 * 0.25
    assert resumed.optimizers["adamw"].param_groups[0]["lr"] == 0.002 * 0.25
    for name, tensor in straight_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_muonclip_step_reports_logits_and_balance():
    model = tiny_model()
    optimizer = build_muonclip(model, OptimConfig(qk_clip_tau=1e-3))  # every head clips
    ids, mask = _batch(padded=True)
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    metrics = optimizer.step()
    assert metrics["muonclip/heads_clipped"] == 8
    assert {
        "muonclip/max_logit/layer_0",
        "muonclip/max_logit/layer_1",
        "moe/imbalance/layer_1",
    } <= set(metrics)


@pytest.mark.parametrize(
    ("preset", "total", "active"),
    [("deepseek_v3", 671e9, 37e9), ("kimi_k2", 1.04e12, 32e9)],
)
def test_big_presets_match_published_counts(preset, total, active):
    model = meta_model(load_preset(preset))
    assert next(model.parameters()).device.type == "meta"
    assert abs(count_parameters(model) / total - 1) < 0.02
    assert abs(count_active_parameters(model) / active - 1) < 0.02
