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
- `plan_buckets(meta, bucket_bytes, dtype, convert)`: a sync's buckets from shapes alone (the
  learner's names gathered per bucket, and the checkpoint-named `Layout`s `pack` will give them),
  so the engines can be told every layout before anything is gathered; `broadcast_ranks`: the
  group's world size and each engine's first rank (tensor parallelism: one rank per worker).
- `send_buckets(plan, fetch, send, ...)`: the sender's loop (gather each tensor, cast, copy into
  the bucket's buffers, send the bucket, drop it: one bucket alive at a time);
  `receive_buckets(layouts, device, receive)`: the receiver's. `send`/`receive` are passed in:
  NCCL in a run (`broadcast_buffers`), gloo in the CPU test.
- `broadcast_group(...)`: an NCCL group of the learner's rank 0 (rank 0, listening at an
  OS-assigned port: `listen_socket`) and every engine worker, built on vLLM's
  StatelessProcessGroup and PyNcclCommunicator (imported inside the function), and
  `broadcast_buffers` to send or receive a bucket's buffers in it.
The sender keeps its buffers alive until every receiver has loaded (the caller's duty). Only torch
is imported here: a GPU check script imports this module on a machine without Ray or vLLM. Left
out: reusing one IPC buffer across buckets (vLLM's packed_tensor does), and a pipelined
(double-buffered) broadcast.
"""

from __future__ import annotations

from collections.abc import Callable
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


def layouts_of(state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> list[Layout]:
    """The `Layout`s `pack` gives `state` (shapes and dtypes only: meta tensors will do), one
    per dtype in order of each dtype's first tensor, floating tensors counted as `dtype`."""
    groups: dict[torch.dtype, list[Slot]] = {}
    offsets: dict[torch.dtype, int] = {}
    for name, tensor in state.items():
        target = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        offset = offsets.get(target, 0)
        groups.setdefault(target, []).append(
            Slot(name, tuple(tensor.shape), offset, tensor.numel())
        )
        offsets[target] = offset + tensor.numel()
    return [Layout(dtype_name(target), tuple(slots)) for target, slots in groups.items()]


def pack(
    state: dict[str, torch.Tensor], dtype: torch.dtype | None = None
) -> list[tuple[torch.Tensor, Layout]]:
    """One flat buffer per dtype (on the tensors' device), floating tensors cast to `dtype`
    (None: kept) once, while they are copied in; buffers in order of each dtype's first tensor."""
    if not state:
        return []
    layouts = layouts_of(state, dtype)
    buffers = empty_buffers(layouts, next(iter(state.values())).device)
    for buffer, layout in zip(buffers, layouts, strict=True):
        for slot in layout.slots:  # the cast, in the copy
            buffer[slot.offset : slot.offset + slot.numel].copy_(
                state[slot.name].detach().reshape(-1)
            )
    return list(zip(buffers, layouts, strict=True))


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


@dataclass(frozen=True)
class Bucket:
    """One broadcast of a sync: the learner's tensors gathered for it (`sources`, in order) and
    the layouts of its buffers, checkpoint-named (what the engines are told beforehand)."""

    sources: tuple[str, ...]
    layouts: tuple[Layout, ...]


def _same(state: dict) -> dict:
    return state


def plan_buckets(
    meta: dict[str, torch.Tensor],
    bucket_bytes: int,
    dtype: torch.dtype | None = None,
    convert: Callable[[dict], dict] = _same,
) -> list[Bucket]:
    """Consecutive learner tensors (`meta`: shapes and dtypes, e.g. on the meta device) in
    buckets of at most `bucket_bytes` counted in the engines' `dtype` (a larger tensor: alone),
    each with the layouts `pack` gives its tensors after `convert` (learner names to checkpoint
    names: fused experts split). Every rank computes the same plan from the same metadata."""
    buckets: list[Bucket] = []
    sources: list[str] = []
    size = 0

    def close() -> None:
        converted = convert({name: meta[name] for name in sources})
        buckets.append(Bucket(tuple(sources), tuple(layouts_of(converted, dtype))))

    for name, tensor in meta.items():
        cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        nbytes = tensor.numel() * cast.itemsize
        if sources and size + nbytes > bucket_bytes:
            close()
            sources, size = [], 0
        sources.append(name)
        size += nbytes
    if sources:
        close()
    return buckets


def broadcast_ranks(engine_sizes: list[int]) -> tuple[int, list[int]]:
    """(world size, each engine's first rank) of the broadcast group: rank 0 is the learner's
    rank 0, then each engine's workers (its tensor-parallel size of them) in engine order."""
    firsts, next_rank = [], 1
    for size in engine_sizes:
        firsts.append(next_rank)
        next_rank += size
    return next_rank, firsts


def send_buckets(
    plan: list[Bucket],
    fetch: Callable[[str], torch.Tensor | None],
    send: Callable[[list[torch.Tensor]], None] | None,
    device: torch.device,
    dtype: torch.dtype | None = None,
    convert: Callable[[dict], dict] = _same,
) -> int:
    """The sender's loop, on every learner rank: `fetch(source)` for each tensor of each bucket,
    in plan order (it gathers: a collective every rank calls; it returns the whole tensor on the
    sending rank, None elsewhere). The sender (`send` given) casts each tensor to `dtype` as it
    comes, copies it into the bucket's buffers, and `send`s them once the bucket is full, so at
    most one bucket's buffers (and one whole tensor) are alive at a time. Returns the bytes sent."""
    sent = 0
    for bucket in plan:
        buffers, where = [], {}
        if send is not None:
            buffers = empty_buffers(list(bucket.layouts), device)
            pairs = zip(buffers, bucket.layouts, strict=True)
            where = {slot.name: (b, slot) for b, layout in pairs for slot in layout.slots}
        for source in bucket.sources:
            whole = fetch(source)
            if send is None:
                continue
            if dtype is not None and whole.is_floating_point():
                whole = whole.to(dtype)  # the one cast, before experts are split
            for name, tensor in convert({source: whole}).items():
                buffer, slot = where[name]
                buffer[slot.offset : slot.offset + slot.numel].copy_(tensor.detach().reshape(-1))
            del whole
        if send is not None:
            send(buffers)
            sent += sum(buffer.numel() * buffer.element_size() for buffer in buffers)
        del buffers, where
    return sent


def receive_buckets(
    layouts: list[Layout],
    device: torch.device,
    receive: Callable[[list[torch.Tensor]], None],
) -> dict[str, torch.Tensor]:
    """The receiver's side: buffers for `layouts` (every bucket's, in the sender's order),
    filled by `receive`, unpacked into {checkpoint name: view}."""
    buffers = empty_buffers(layouts, device)
    receive(buffers)
    pairs = zip(buffers, layouts, strict=True)
    return {name: view for buffer, layout in pairs for name, view in unpack(buffer, layout).items()}


def listen_socket(host: str):
    """A socket listening on `host` at a port the OS assigns while binding (port 0), for the
    group's store (no other process can take the port in between); its port is
    `sock.getsockname()[1]`."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


def broadcast_group(
    host: str, port: int, rank: int, world_size: int, device: torch.device, listening=None
):
    """An NCCL communicator over a group of its own (rank 0: the learner's rank 0, which passes
    its `listen_socket` as `listening` and hosts the store; 1..: engine workers), apart from any
    torch.distributed group the process is in; every member calls this at once (it blocks until
    all have joined)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(
        host=host, port=port, rank=rank, world_size=world_size, listen_socket=listening
    )
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
