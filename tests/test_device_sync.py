"""Device weight sync (selfcritic/rollout/device_sync.py): packing is bit-exact and casts once,
an IPC handle opens the sender's buffer in another process without a copy (CPU: through
torch.multiprocessing's shared memory; CUDA: marked gpu), and a vLLM engine loads from handles
(gpu)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing

from selfcritic.rollout.device_sync import Layout, ipc_handle, open_ipc_handle, pack, unpack


def _mixed_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(7, 13, generator=generator),  # odd sizes
        "b.bias": torch.randn(1, generator=generator).to(torch.bfloat16),
        "c.scalar": torch.tensor(3.5),  # 0-d
        "d.count": torch.arange(5, dtype=torch.int64),
        "e.weight": torch.randn(3, 1, 5, generator=generator),
        "f.half": torch.randn(11, generator=generator).to(torch.float16),
        "g.empty": torch.zeros(0, 4),
    }


def test_pack_unpack_is_bit_exact_over_mixed_dtypes_and_odd_sizes():
    state = _mixed_state()
    packed = pack(state)
    assert [layout.dtype for _, layout in packed] == ["float32", "bfloat16", "int64", "float16"]
    assert all(buffer.is_contiguous() and buffer.dim() == 1 for buffer, _ in packed)
    back = {
        name: view for buffer, layout in packed for name, view in unpack(buffer, layout).items()
    }
    assert list(back) != [] and set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape
        assert torch.equal(_bytes(back[name]), _bytes(tensor))  # bit-exact
    first, layout = packed[0]
    views = unpack(first, layout)
    first.zero_()  # views, not copies
    assert torch.count_nonzero(views["a.weight"]) == 0


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


def test_floating_tensors_are_cast_once_to_the_engine_dtype():
    state = _mixed_state()
    packed = pack(state, torch.bfloat16)
    assert [layout.dtype for _, layout in packed] == ["bfloat16", "int64"]
    (floats, layout), (ints, _) = packed
    assert floats.numel() == sum(t.numel() for t in state.values() if t.is_floating_point())
    back = unpack(floats, layout)
    for name, tensor in state.items():
        if tensor.is_floating_point():  # the one cast: exactly torch's own
            assert torch.equal(back[name], tensor.to(torch.bfloat16))
    assert torch.equal(ints, state["d.count"])


def _receive(handles, layouts, results) -> None:
    """The engine's side, in another process: open, unpack, report, write back a mark."""
    opened = [open_ipc_handle(handle) for handle in handles]
    pairs = zip(opened, layouts, strict=True)
    state = {n: v for buffer, layout in pairs for n, v in unpack(buffer, layout).items()}
    results.put({name: tensor.double().sum().item() for name, tensor in state.items()})
    opened[0][0] = -42.0  # the sender's memory itself
    del state, opened


def _round_trip(device: str) -> None:
    state = {name: t.to(device) for name, t in _mixed_state().items()}
    packed = pack(state, torch.float32)
    handles = [ipc_handle(buffer) for buffer, _ in packed]
    layouts: list[Layout] = [layout for _, layout in packed]
    # torch.multiprocessing's context: its pickler moves a CPU storage into shared memory
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_receive, args=(handles, layouts, results))
    child.start()
    sums = results.get(timeout=120)
    child.join(timeout=120)
    assert child.exitcode == 0
    assert sums == {name: t.double().sum().item() for name, t in _cast(state).items()}
    assert packed[0][0][0].item() == -42.0  # the child wrote into our buffer: no copy


def _cast(state):
    return {n: t.float() if t.is_floating_point() else t for n, t in state.items()}


def test_an_ipc_handle_opens_the_senders_buffer_in_another_process_cpu():
    _round_trip("cpu")


@pytest.mark.gpu
def test_an_ipc_handle_opens_the_senders_buffer_in_another_process_cuda():
    _round_trip("cuda")


# On a GPU with vLLM (plain `vllm`, CUDA build): not yet run (docs/gpus-engines.md).
def _gpu_engine(nano_model_path, **settings):
    import os

    from selfcritic.config import RolloutConfig
    from selfcritic.rollout.vllm_engine import VLLMEngine

    os.environ.setdefault("VLLM_MLA_DISABLE", "1")  # the nano model's latent size is not 512
    cfg = RolloutConfig(gpus_per_engine=1, gpu_memory_utilization=0.3, **settings)
    return VLLMEngine(nano_model_path, cfg)


def _greedy(engine):
    from selfcritic.rollout.types import SamplingSpec

    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=8)
    groups = engine.generate([[1, 5, 7, 9], [1, 11, 12]], spec)
    return [(s.completion_ids, s.logprobs) for group in groups for s in group]


@pytest.mark.gpu
def test_vllm_sleep_frees_gpu_memory_and_wakes_to_the_same_generations(nano_model_path):
    engine = _gpu_engine(nano_model_path, sleep_level=1)
    try:
        before, free_awake = _greedy(engine), torch.cuda.mem_get_info()[0]
        engine.sleep(1)
        freed = torch.cuda.mem_get_info()[0] - free_awake
        assert freed > 0.5 * 0.3 * torch.cuda.mem_get_info()[1]  # most of its share is back
        engine.wake_up(("weights",))
        engine.wake_up(("kv_cache",))
        assert engine.asleep == 0
        assert _greedy(engine) == before
    finally:
        engine.shutdown()


def _send_weights(model_path, handles_out, done) -> None:
    """The learner's side in its own process: trained weights packed on the GPU, shared by
    handle, kept alive until the engine has loaded them."""
    from selfcritic.model.build import load_model
    from selfcritic.rollout.weights import to_checkpoint_names

    model = load_model(model_path).cuda()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(1.05)
    packed = pack(to_checkpoint_names(model.state_dict()), torch.float32)
    handles_out.put([(ipc_handle(buffer), layout) for buffer, layout in packed])
    done.get(timeout=300)


@pytest.mark.gpu
def test_a_vllm_engine_loads_weights_from_cuda_ipc_handles(nano_model_path):
    from selfcritic.model.build import load_model
    from selfcritic.rollout.weights import to_checkpoint_names

    engine = _gpu_engine(nano_model_path)
    context = torch.multiprocessing.get_context("spawn")
    handles, done = context.Queue(), context.Queue()
    sender = context.Process(target=_send_weights, args=(nano_model_path, handles, done))
    sender.start()
    try:
        engine.update_weights_from_ipc(handles.get(timeout=300), version=1)
        done.put(True)
        through_ipc = _greedy(engine)
        model = load_model(nano_model_path)
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1.05)
        engine.update_weights(to_checkpoint_names(model.state_dict()), version=2)
        assert through_ipc == _greedy(engine)  # the same weights as the host path's
        assert engine.weight_version == 2
    finally:
        done.put(True)
        sender.join(timeout=60)
        engine.shutdown()


# rollout.weight_sync=nccl: the bucket plan, the send loop and the receiver (device_sync), run
# here through torch's gloo between two processes; NCCL itself only on a GPU (marked gpu).
def _learner_state() -> dict[str, torch.Tensor]:
    """Learner-named tensors: float32 masters, a fused expert pair (split by to_checkpoint_names),
    an integer buffer."""
    generator = torch.Generator().manual_seed(1)
    return {
        "model.embed_tokens.weight": torch.randn(11, 6, generator=generator),
        "model.layers.0.mlp.experts.gate_up_proj": torch.randn(3, 8, 6, generator=generator),
        "model.layers.0.mlp.experts.down_proj": torch.randn(3, 6, 4, generator=generator),
        "model.layers.0.mlp.gate.e_score_correction_bias": torch.randn(3, generator=generator),
        "model.layers.0.step_count": torch.arange(4, dtype=torch.int64),
        "model.norm.weight": torch.randn(6, generator=generator),
        "lm_head.weight": torch.randn(11, 6, generator=generator),
    }


def _meta(state):
    return {n: torch.empty(t.shape, dtype=t.dtype, device="meta") for n, t in state.items()}


def test_the_plan_tells_the_layouts_pack_gives_in_bucket_order_from_shapes_alone():
    from selfcritic.rollout.device_sync import plan_buckets
    from selfcritic.rollout.weights import to_checkpoint_names

    state = _learner_state()
    bucket_bytes = 11 * 6 * 2 + 3 * 8 * 6 * 2  # embedding + gate_up in bfloat16
    plan = plan_buckets(_meta(state), bucket_bytes, torch.bfloat16, to_checkpoint_names)
    assert [bucket.sources for bucket in plan] == [
        ("model.embed_tokens.weight", "model.layers.0.mlp.experts.gate_up_proj"),
        (
            "model.layers.0.mlp.experts.down_proj",
            "model.layers.0.mlp.gate.e_score_correction_bias",
            "model.layers.0.step_count",
            "model.norm.weight",
            "lm_head.weight",  # 326 bytes in bfloat16: fits the second bucket
        ),
    ]
    for bucket in plan:  # what the engines are told = what rank 0 will pack, metadata only
        real = to_checkpoint_names({name: state[name] for name in bucket.sources})
        packed = pack(real, torch.bfloat16)
        assert list(bucket.layouts) == [layout for _, layout in packed]
    names = [slot.name for b in plan for layout in b.layouts for slot in layout.slots]
    assert "model.layers.0.mlp.experts.2.up_proj.weight" in names  # experts split
    assert [layout.dtype for layout in plan[1].layouts] == ["bfloat16", "int64"]
    # a tensor larger than a bucket travels alone
    alone = plan_buckets(_meta(state), 1, torch.bfloat16, to_checkpoint_names)
    assert [len(bucket.sources) for bucket in alone] == [1] * len(state)


def test_the_group_has_rank_0_then_every_engine_worker_in_engine_order():
    from selfcritic.rollout.device_sync import broadcast_ranks

    assert broadcast_ranks([1, 1]) == (3, [1, 2])
    assert broadcast_ranks([2, 2, 2]) == (7, [1, 3, 5])  # tensor parallel 2: two ranks each
    assert broadcast_ranks([4]) == (5, [1])


def test_the_send_loop_keeps_one_bucket_alive_and_gathers_in_plan_order_on_every_rank():
    from selfcritic.rollout.device_sync import plan_buckets, send_buckets

    state = _learner_state()
    plan = plan_buckets(_meta(state), 200, torch.bfloat16)
    fetched, sent = [], []

    def send(buffers):
        sent.append([(b.dtype, b.numel()) for b in buffers])
        buffers[0].fill_(0)  # the sender may reuse nothing it sent: a fresh bucket each time

    total = send_buckets(plan, lambda n: fetched.append(n) or state[n], send, "cpu", torch.bfloat16)
    assert fetched == list(state) and len(sent) == len(plan) > 1
    assert sent == [[(getattr(torch, x.dtype), x.numel) for x in b.layouts] for b in plan]
    assert total == sum(n * (2 if dtype == torch.bfloat16 else 8) for b in sent for dtype, n in b)
    # another rank: the same gathers in the same order, nothing packed or sent
    fetched.clear()
    assert send_buckets(plan, lambda n: fetched.append(n), None, None, torch.bfloat16) == 0
    assert fetched == list(state)


def _gloo_member(rank: int, init: str, plan, layouts, results) -> None:
    import torch.distributed as dist

    from selfcritic.rollout.device_sync import receive_buckets, send_buckets
    from selfcritic.rollout.weights import to_checkpoint_names

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)

    def broadcast(buffers):  # what broadcast_buffers does over NCCL
        for buffer in buffers:
            dist.broadcast(buffer, src=0)

    if rank == 0:
        state = _learner_state()
        alive = []

        def send(buffers):
            alive.append(sum(b.numel() for b in buffers))
            broadcast(buffers)

        send_buckets(plan, state.__getitem__, send, "cpu", torch.bfloat16, to_checkpoint_names)
        results.put(("sender", alive))
    else:
        got = receive_buckets(layouts, torch.device("cpu"), broadcast)
        # plain bytes: a tensor in a queue is shared by a file descriptor this process must
        # outlive, and it exits next
        raw = {name: _bytes(t.contiguous()).numpy().tobytes() for name, t in got.items()}
        results.put(("receiver", raw))
    dist.destroy_process_group()


def test_a_sync_travels_bucket_by_bucket_through_a_real_broadcast_over_gloo(tmp_path):
    from selfcritic.rollout.device_sync import plan_buckets
    from selfcritic.rollout.weights import to_checkpoint_names

    state = _learner_state()
    plan = plan_buckets(_meta(state), 300, torch.bfloat16, to_checkpoint_names)
    layouts = [layout for bucket in plan for layout in bucket.layouts]
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    init = f"file://{tmp_path / 'store'}"
    members = [
        context.Process(target=_gloo_member, args=(rank, init, plan, layouts, results))
        for rank in (0, 1)
    ]
    for member in members:
        member.start()
    got = dict(results.get(timeout=120) for _ in members)
    for member in members:
        member.join(timeout=120)
        assert member.exitcode == 0
    expected = to_checkpoint_names(
        {n: t.to(torch.bfloat16) if t.is_floating_point() else t for n, t in state.items()}
    )
    assert set(got["receiver"]) == set(expected)
    for name, tensor in expected.items():  # cast once on the sender, bit-exact on arrival
        assert got["receiver"][name] == _bytes(tensor.contiguous()).numpy().tobytes(), name
    assert len(got["sender"]) == len(plan) > 1  # one bucket per broadcast
    assert max(got["sender"]) < sum(t.numel() for t in expected.values())  # never all at once


class _Remote:
    """A fake Ray method: `.remote(*args)` records the call and returns a tag for it."""

    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args):
        self.calls.append((self.name, *args))
        return f"ref:{self.name}"


def test_the_group_forms_once_rejoins_after_a_restart_and_syncs_by_the_backend(monkeypatch):
    import ray

    from selfcritic.config import RolloutConfig
    from selfcritic.learner.group import LearnerGroup
    from selfcritic.rollout.broadcast import WeightBroadcast

    calls: list = []
    waited: list = []
    answers = {
        "ref:rank0.open_weight_broadcast": ("10.0.0.7", 4242),
        "ref:rank0.weight_layouts": ["layouts of every bucket"],
    }
    monkeypatch.setattr(ray, "get", lambda refs: waited.append(refs) or answers.get(str(refs)))

    class Rank:
        def __init__(self, index: int) -> None:
            for name in ("open_weight_broadcast", "join_weight_broadcast", "weight_layouts"):
                setattr(self, name, _Remote(calls, f"rank{index}.{name}"))
            self.broadcast_weights = _Remote(calls, f"rank{index}.broadcast_weights")

    learner = LearnerGroup.__new__(LearnerGroup)
    learner.ranks = [Rank(0), Rank(1)]

    class Pool:
        restarts, died = 0, False

        def engine_sizes(self):
            return [2, 2]  # two engines, tensor parallel 2

        def join_weight_broadcast(self, host, port, firsts, world):
            calls.append(("pool.join", host, port, firsts, world))
            return ["ref:engine0.join", "ref:engine1.join"]

        def revive(self):
            self.restarts += self.died

        def load_broadcast(self, layouts, sending):
            calls.append(("pool.load", layouts, sending))
            return 7

    pool = Pool()
    cfg = RolloutConfig(sync_bucket_mb=64, dtype="bfloat16")
    broadcast = WeightBroadcast(learner, pool, cfg)
    assert calls == [
        ("rank0.open_weight_broadcast",),
        ("rank0.join_weight_broadcast", 5),
        ("pool.join", "10.0.0.7", 4242, [1, 3], 5),
    ]
    # both sides of the rendezvous asked first, then waited on together
    assert waited[-1] == ["ref:rank0.join_weight_broadcast", "ref:engine0.join", "ref:engine1.join"]
    calls.clear()
    assert broadcast.sync() == 7
    assert calls == [  # no new group; layouts (metadata) from rank 0, every rank in the loop
        ("rank0.weight_layouts", 64, "bfloat16"),
        ("rank0.broadcast_weights", 64, "bfloat16"),
        ("rank1.broadcast_weights", 64, "bfloat16"),
        (
            "pool.load",
            ["layouts of every bucket"],
            ["ref:rank0.broadcast_weights", "ref:rank1.broadcast_weights"],
        ),
    ]
    calls.clear()
    pool.died = True  # an engine restarted (refilled through the object store): a new group
    broadcast.sync()
    assert [call[0] for call in calls][:3] == [
        "rank0.open_weight_broadcast",
        "rank0.join_weight_broadcast",
        "pool.join",
    ]
    assert calls[-1][0] == "pool.load"


def _nccl_member(rank: int, port_queue, plan, layouts, results) -> None:
    from functools import partial

    from selfcritic.rollout.device_sync import (
        broadcast_buffers,
        broadcast_group,
        listen_socket,
        receive_buckets,
        send_buckets,
    )
    from selfcritic.rollout.weights import to_checkpoint_names

    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    if rank == 0:  # the learner's rank 0: listens at an OS-assigned port, hosts the store
        listening = listen_socket("127.0.0.1")
        port = listening.getsockname()[1]
        port_queue.put(port)
        group = broadcast_group("127.0.0.1", port, 0, 2, device, listening)
        state = {n: t.to(device) for n, t in _learner_state().items()}
        send = partial(broadcast_buffers, group)
        send_buckets(plan, state.__getitem__, send, device, torch.bfloat16, to_checkpoint_names)
        results.put(("sender", None))
    else:  # an engine worker
        group = broadcast_group("127.0.0.1", port_queue.get(timeout=60), 1, 2, device)
        got = receive_buckets(layouts, device, partial(broadcast_buffers, group))
        results.put(("receiver", {n: _bytes(t.contiguous()).cpu() for n, t in got.items()}))


@pytest.mark.gpu
def test_a_sync_travels_through_a_real_nccl_broadcast_between_two_gpus():
    """vLLM's StatelessProcessGroup + PyNcclCommunicator, through the same loop (two GPUs:
    NCCL refuses two members of one group on one GPU)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    from selfcritic.rollout.device_sync import plan_buckets
    from selfcritic.rollout.weights import to_checkpoint_names

    state = _learner_state()
    plan = plan_buckets(_meta(state), 300, torch.bfloat16, to_checkpoint_names)
    layouts = [layout for bucket in plan for layout in bucket.layouts]
    context = torch.multiprocessing.get_context("spawn")
    results, ports = context.Queue(), context.Queue()
    members = [
        context.Process(target=_nccl_member, args=(rank, ports, plan, layouts, results))
        for rank in (0, 1)
    ]
    for member in members:
        member.start()
    got = dict(results.get(timeout=300) for _ in members)
    for member in members:
        member.join(timeout=120)
        assert member.exitcode == 0
    cast = {n: t.to(torch.bfloat16) if t.is_floating_point() else t for n, t in state.items()}
    for name, tensor in to_checkpoint_names(cast).items():
        assert got["receiver"][name] == _bytes(tensor.contiguous()).numpy().tobytes(), name
