"""Where a learner rank computes, and a model loaded sharded from the meta device.

- `rank_device` / `compute_dtype` resolve `learner.device` and `learner.compute_dtype` ("auto":
  the rank's GPU and bfloat16 where it has one, else CPU and float32).
- `mixed_precision` is FSDP2's policy for a compute dtype: parameters gathered in that dtype
  for forward and backward, gradients reduced in float32, master weights (the sharded
  parameters the optimizer steps) kept float32.
- `load_sharded` builds the model with its parameters on the meta device (buffers real: the
  rotary tables are computed in `__init__`, not read from a checkpoint), shards it with FSDP2,
  allocates only this rank's shards on its device, and fills them from the checkpoint's
  safetensors tensor by tensor: no rank ever holds the whole model, only one whole tensor at a
  time (for fused routed experts, one layer's). `init_sharded` does the same with a fresh
  initialisation instead of a checkpoint (shapes without files: the device check's reduced
  Moonlight).
Imports only torch and transformers (the GPU device check runs this module without Ray). Left
out: FP8 checkpoints (dequantisation on load) and expert parallelism.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

_EXPERTS = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")


def rank_device(setting: str) -> torch.device:
    """`learner.device` for this process: cuda (its first visible GPU: Ray shows each rank its
    own as device 0) or cpu; "auto" is cuda where one is visible."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "learner.device=cuda but this rank sees no GPU: set learner.gpus_per_rank=1 "
                "(each rank then gets its own), or learner.device=auto"
            )
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def compute_dtype(setting: str, device: torch.device) -> torch.dtype:
    """`learner.compute_dtype`: "auto" is bfloat16 on a GPU and float32 on CPU."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)


def mixed_precision(dtype: torch.dtype):
    """FSDP2's policy computing in `dtype` with float32 gradient reduction; None for float32
    (nothing to cast)."""
    if dtype == torch.float32:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device and keep their buffers real.
    (torch's `torch.device("meta")` context puts buffers there too, and the rotary tables that
    transformers computes in `__init__` would be lost; accelerate's `init_empty_weights` does
    this, but accelerate is not on a bare GPU machine.)"""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            kind = type(module._parameters[name])
            meta = module._parameters[name].to("meta")
            module._parameters[name] = kind(meta, requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def empty_model(config, trust_remote_code: bool = False) -> torch.nn.Module:
    """The causal LM of a transformers `config`, parameters on meta, buffers real, float32."""
    from transformers import AutoModelForCausalLM

    with parameters_on_meta():
        return AutoModelForCausalLM.from_config(
            config,
            dtype=torch.float32,
            attn_implementation="sdpa",
            trust_remote_code=trust_remote_code,
        )


def materialise(
    model: torch.nn.Module, device: torch.device, buffers: dict[str, torch.Tensor]
) -> None:
    """Allocate the (sharded) parameters on `device`, uninitialised, and put back the buffers
    the model was built with (`to_empty` empties them too)."""
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in buffers:
                buffer.copy_(buffers[name])


def real_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


def shard_on(
    config,
    device: torch.device,
    dtype: torch.dtype,
    activation_checkpointing: bool,
    reshard_root: bool | None,
    trust_remote_code: bool,
) -> torch.nn.Module:
    """The model of `config`, sharded with FSDP2 and allocated (uninitialised) on `device`."""
    from selfcritic.learner.distributed import shard_model

    model = empty_model(config, trust_remote_code)
    if activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    buffers = real_buffers(model)
    shard_model(model, reshard_root=reshard_root, mp_policy=mixed_precision(dtype))
    materialise(model, device, buffers)
    return model


def load_sharded(
    model_path: Path,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
    reshard_root: bool | None = None,
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """The checkpoint at `model_path`, sharded over the current process group (FSDP2, float32
    master weights computing in `dtype`), each rank reading only the tensors it needs, one at a
    time, and keeping its shard."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    model = shard_on(
        config, device, dtype, activation_checkpointing, reshard_root, trust_remote_code
    )
    fill_from_checkpoint(model, Path(model_path))
    return model


def init_sharded(
    config,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
    seed: int = 0,
) -> torch.nn.Module:
    """A freshly initialised model of `config`, sharded and allocated as `load_sharded`'s: each
    rank initialises only its shard (no checkpoint needed)."""
    model = shard_on(config, device, dtype, activation_checkpointing, None, False)
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            model._init_weights(module)
    return model


class CheckpointReader:
    """The tensors of a safetensors checkpoint by name, read one at a time (memory-mapped)."""

    def __init__(self, model_path: Path) -> None:
        from safetensors import safe_open

        self.files = [
            safe_open(str(p), framework="pt") for p in sorted(model_path.glob("*.safetensors"))
        ]
        if not self.files:
            raise FileNotFoundError(f"{model_path} holds no .safetensors file to load from")
        self.where = {name: stream for stream in self.files for name in stream.keys()}  # noqa: SIM118 - safe_open is no dict

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> torch.Tensor:
        return self.where[name].get_tensor(name)


def checkpoint_tensor(reader: CheckpointReader, name: str, count: int) -> torch.Tensor:
    """The whole float32 tensor that the model calls `name`: a checkpoint tensor, or the
    routed experts' fused tensor stacked from the checkpoint's per-expert matrices (transformers
    fuses them in memory: selfcritic/rollout/weights.py), or the embedding for a tied output
    head the checkpoint leaves out."""
    fused = _EXPERTS.match(name)
    if fused is None:
        if name not in reader and name == "lm_head.weight":
            name = "model.embed_tokens.weight"
        return reader.get(name).float()
    prefix, kind = fused.groups()
    if kind == "down_proj":
        return torch.stack(
            [reader.get(f"{prefix}.{e}.down_proj.weight") for e in range(count)]
        ).float()
    gate = torch.stack([reader.get(f"{prefix}.{e}.gate_proj.weight") for e in range(count)])
    up = torch.stack([reader.get(f"{prefix}.{e}.up_proj.weight") for e in range(count)])
    return torch.cat([gate, up], dim=1).float()


@torch.no_grad()
def fill_from_checkpoint(model: torch.nn.Module, model_path: Path) -> None:
    """Copy each of this rank's shards (and each persistent buffer) from the checkpoint."""
    from torch.distributed.tensor import distribute_tensor

    reader = CheckpointReader(model_path)
    for name, target in model.state_dict().items():
        full = checkpoint_tensor(reader, name, target.shape[0]).to(target.device)
        if hasattr(target, "device_mesh"):  # a DTensor: this rank's chunk, no communication
            mine = distribute_tensor(
                full, target.device_mesh, target.placements, src_data_rank=None
            )
            target.to_local().copy_(mine.to_local())
        else:
            target.copy_(full)
