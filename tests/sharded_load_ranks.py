"""Run by tests/test_learner_device.py under torchrun (2 processes, gloo on CPU; or 1 process on
a GPU): each rank loads the checkpoint sharded from the meta device and writes to OUT/rankR.json
what the test checks: its share of the parameters, the dtype of its master weights, and the
logits and gradients of one forward and backward on a fixed input (float32 compute, bfloat16
compute, and float32 with activation checkpointing). Arguments: MODEL_PATH OUT DEVICE."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from selfcritic.learner.device import load_sharded
from selfcritic.learner.distributed import backend, full_tensor

INPUT = [[1, 5, 6, 7, 8, 9, 10, 11], [1, 12, 13, 14, 15, 16, 17, 18]]
WATCHED = "model.layers.1.self_attn.kv_b_proj.weight"  # a gradient every variant compares


def forward_backward(model: torch.nn.Module, device: torch.device) -> dict:
    ids = torch.tensor(INPUT, device=device)
    logits = model(input_ids=ids, use_cache=False).logits.float()
    logits.square().mean().backward()
    grad = full_tensor(dict(model.named_parameters())[WATCHED].grad)
    return {"logits": logits.detach().cpu().tolist(), "grad": grad.float().cpu().tolist()}


def main() -> None:
    model_path, out, device_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    dist.init_process_group(backend(device_name))
    device = torch.device(device_name, 0) if device_name == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    report = {}
    for label, dtype, checkpointing in (
        ("float32", torch.float32, False),
        ("bfloat16", torch.bfloat16, False),
        ("checkpointed", torch.float32, True),
    ):
        model = load_sharded(model_path, device, dtype, activation_checkpointing=checkpointing)
        params = list(model.parameters())
        report[label] = {
            "local": sum(p.to_local().numel() for p in params),
            "total": sum(p.numel() for p in params),
            "master_dtypes": sorted({str(p.dtype) for p in params}),
            **forward_backward(model, device),
        }
        del model
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
