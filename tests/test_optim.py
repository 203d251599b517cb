"""Muon against torch.optim.Muon, per-expert orthogonalisation, and parameter grouping."""

from __future__ import annotations

import pytest
import torch

from selfcritic.config import OptimConfig
from selfcritic.optim.muon import Muon
from selfcritic.optim.muonclip import build_muonclip
from selfcritic.optim.newton_schulz import orthogonalize


def _grads(shape, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(steps)]


def _run(optimizer_cls, param, grads, **kwargs):
    optimizer = optimizer_cls([param], **kwargs)
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
    return param


@pytest.mark.parametrize("shape", [(32, 48), (48, 32)])
def test_matches_torch_muon_on_matrices(shape):
    """Same hyper-parameters, bfloat16 Newton-Schulz as torch does: the same weights."""
    start = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    grads = _grads(shape, steps=3, seed=2)
    common = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    ours = _run(Muon, start.clone(), grads, ns_dtype=torch.bfloat16, **common)
    theirs = _run(torch.optim.Muon, start.clone(), grads, adjust_lr_fn="match_rms_adamw", **common)
    assert torch.allclose(ours, theirs, atol=2e-3), (ours - theirs).abs().max()


def test_orthogonalize_flattens_singular_values():
    matrix = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    singular = torch.linalg.svdvals(orthogonalize(matrix, dtype=torch.float32))
    # the quintic iteration lands singular values in roughly (0.5, 1.5), not exactly 1
    assert singular.min() > 0.5 and singular.max() < 1.5


def test_experts_are_orthogonalised_one_matrix_at_a_time():
    """A fused [E, 2I, H] tensor with splits=2 updates like 2E separate matrices."""
    experts, inter, hidden = 3, 4, 6
    fused = torch.randn(experts, 2 * inter, hidden, generator=torch.Generator().manual_seed(3))
    grads = _grads(fused.shape, steps=2, seed=4)
    fused_result = Muon([{"params": [fused.clone()], "splits": 2}], lr=0.1)
    param = fused_result.param_groups[0]["params"][0]
    for grad in grads:
        param.grad = grad.clone()
        fused_result.step()
    for e in range(experts):
        for half in range(2):
            rows = slice(half * inter, (half + 1) * inter)
            single = _run(Muon, fused[e, rows].clone(), [g[e, rows] for g in grads], lr=0.1)
            assert torch.allclose(param[e, rows], single, atol=1e-5)


def test_grouping_puts_every_parameter_in_one_group(nano_model_path):
    from selfcritic.model.build import load_model

    model = load_model(nano_model_path)
    optimizer = build_muonclip(model, OptimConfig())
    muon, adamw = optimizer.groups["muon"], optimizer.groups["adamw"]
    assert "model.embed_tokens.weight" in adamw and "lm_head.weight" in adamw
    assert "model.layers.1.mlp.experts.gate_up_proj" in muon
    assert "model.layers.0.self_attn.kv_b_proj.weight" in muon
    assert all("norm" not in name for name in muon)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert sorted(muon + adamw) == sorted(names)
    splits = {id(g["params"][0]): g["splits"] for g in optimizer.optimizers["muon"].param_groups}
    fused = dict(model.named_parameters())["model.layers.1.mlp.experts.gate_up_proj"]
    assert splits[id(fused)] == 2


def test_state_dict_round_trip(nano_model_path):
    from selfcritic.model.build import load_model

    model = load_model(nano_model_path)
    optimizer = build_muonclip(model, OptimConfig())
    for param in model.parameters():
        param.grad = torch.ones_like(param) * 1e-3
    optimizer.step()
    restored = build_muonclip(model, OptimConfig())
    restored.load_state_dict(optimizer.state_dict())
    fused = dict(model.named_parameters())["model.layers.1.mlp.experts.gate_up_proj"]
    assert torch.equal(
        restored.optimizers["muon"].state[fused]["momentum_buffer"],
        optimizer.optimizers["muon"].state[fused]["momentum_buffer"],
    )
    # a schedule edits `lr` on the MuonClip's groups: after a load it must still reach the inner
    # optimizers (torch's load_state_dict gives them new group dicts)
    for group in restored.param_groups:
        group["lr"] = 0.5
    inner = [g["lr"] for o in restored.optimizers.values() for g in o.param_groups]
    assert inner == [0.5] * len(inner)
