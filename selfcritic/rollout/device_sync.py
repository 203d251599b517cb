"""Weight sync on the device: buckets packed into flat buffers, shared by CUDA IPC handle or
sent by an NCCL broadcast, unpacked into views on the engine's side (`rollout.weight_sync`
cuda_ipc | nccl; docs/gpus-engines.md).

- `pack(state, dtype)`: one flat contiguous buffer per dtype for a bucket of tensors, floating
  tensors cast to the engine's dtype once (float32 master weights -> bfloat16 in the same copy
  that packs them), with each tensor's `Slot` (name, shape, offset, numel); `unpack` gives views
  into the buffers, no copy.
- `ipc_handle(buffer)` / `open_ipc_handle(handle)`: torch's own CUDA IPC export
  (`torch.multiprocessing.reductions.reduce_tensor`) and rebuild, with the device mapped by its
  UUID in the receiver's numbering (Ray gives each actor its own CUDA_VISIBLE_DEVICES). On CPU the
  same handle holds the storage itself, which torch.multiprocessing's pickler moves into shared
  memory (the tests use that to check the protocol without a GPU).
- `broadcast_group(...)`: an NCCL group of the learner's rank 0 (rank 0) and every engine worker,
  built on vLLM's StatelessProcessGroup and PyNcclCommunicator (imported inside the function),
  and `broadcast_buffers` to send or receive a bucket's buffers in it.
The sender keeps its buffers alive until every receiver has loaded (the caller's duty). Only torch
is imported here: a GPU check script imports this module on a machine without Ray or vLLM. Left
out: reusing one IPC buffer across buckets (vLLM's packed_tensor does), and a pipelined
(double-buffered) broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Slot:
    """Where one tensor lies in its dtype's flat buffer (offset and numel in elements)."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class Layout:
    """One flat buffer of a bucket: its dtype (a name: `str(torch.dtype)` minus `torch.`) and
    the tensors it holds, in order."""

    dtype: str
    slots: tuple[Slot, ...]

    @property
    def numel(self) -> int:
        return sum(slot.numel for slot in self.slots)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def pack(
    state: dict[str, torch.Tensor], dtype: torch.dtype | None = None
) -> list[tuple[torch.Tensor, Layout]]:
    """One flat buffer per dtype (on the tensors' device), floating tensors cast to `dtype`
    (None: kept) once, while they are copied in; buffers in order of each dtype's first tensor."""
    groups: dict[torch.dtype, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in state.items():
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        groups.setdefault(target, []).append((name, tensor.detach()))
    packed = []
    for target, items in groups.items():
        slots, offset = [], 0
        for name, tensor in items:
            slots.append(Slot(name, tuple(tensor.shape), offset, tensor.numel()))
            offset += tensor.numel()
        device = items[0][1].device
        buffer = torch.empty(offset, dtype=target, device=device)
        for slot, (_, tensor) in zip(slots, items, strict=True):
            buffer[slot.offset : slot.offset + slot.numel].copy_(tensor.reshape(-1))  # the cast
        packed.append((buffer, Layout(dtype_name(target), tuple(slots))))
    return packed


def unpack(buffer: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """{name: view into `buffer`} (no copy: the views live as long as the buffer's memory)."""
    assert buffer.numel() == layout.numel and dtype_name(buffer.dtype) == layout.dtype, (
        buffer.shape,
        buffer.dtype,
        layout.dtype,
    )
    return {
        slot.name: buffer[slot.offset : slot.offset + slot.numel].view(slot.shape)
        for slot in layout.slots
    }


def ipc_handle(buffer: torch.Tensor) -> tuple:
    """What another process needs to open `buffer` without a copy: (rebuild function, its
    arguments, the device's UUID or None on CPU). A CUDA handle is plain data; a CPU one holds
    the storage, shared only through torch.multiprocessing's pickler."""
    from torch.multiprocessing.reductions import reduce_tensor

    rebuild, args = reduce_tensor(buffer)
    uuid = str(torch.cuda.get_device_properties(buffer.device).uuid) if buffer.is_cuda else None
    return rebuild, args, uuid


# reduce_tensor's arguments for a CUDA tensor: the device index is the seventh
_CUDA_DEVICE_ARG = 6


def open_ipc_handle(handle: tuple) -> torch.Tensor:
    """The tensor an `ipc_handle` names, opened in this process (CUDA: on the device with the
    sender's UUID, as this process numbers its visible devices)."""
    rebuild, args, uuid = handle
    if uuid is not None:
        args = list(args)
        args[_CUDA_DEVICE_ARG] = local_device_index(uuid)
    return rebuild(*args)


def local_device_index(uuid: str) -> int:
    """This process's index of the visible GPU with `uuid`; a clear error if it is not visible."""
    for index in range(torch.cuda.device_count()):
        if str(torch.cuda.get_device_properties(index).uuid) == uuid:
            return index
    raise RuntimeError(
        f"weight sync: the learner's GPU {uuid} is not visible to this engine (CUDA_VISIBLE_"
        f"DEVICES={_visible()}); rollout.weight_sync=cuda_ipc needs the engines on the learner "
        "rank 0's GPUs (rollout.placement=colocate): else set rollout.weight_sync=object_store"
    )


def _visible() -> str:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def broadcast_group(host: str, port: int, rank: int, world_size: int, device: torch.device):
    """An NCCL communicator over a group of its own (rank 0: the learner's rank 0; 1..: engine
    workers), apart from any torch.distributed group the process is in; every member calls this
    at once (it blocks until all have joined)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


def broadcast_buffers(communicator, buffers: list[torch.Tensor]) -> None:
    """Send (rank 0) or receive (the others, into buffers allocated from the layouts) a
    bucket's buffers, then wait for the stream."""
    for buffer in buffers:
        communicator.broadcast(buffer, src=0, stream=torch.cuda.current_stream())
    torch.cuda.current_stream().synchronize()


def empty_buffers(layouts: list[Layout], device: torch.device) -> list[torch.Tensor]:
    """Receiving buffers for a broadcast of these layouts."""
    return [
        torch.empty(layout.numel, dtype=getattr(torch, layout.dtype), device=device)
        for layout in layouts
    ]
