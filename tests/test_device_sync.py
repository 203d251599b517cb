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
