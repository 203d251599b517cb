"""The device check, tier A (issue 36; docs/gpus.md): the learner side on one GPU, in minutes.

Imports only torch, transformers, PyYAML (a transformers dependency) and the project's
torch-only modules (model, optimizer, learner, device sync): it runs on a bare machine without
Ray, vLLM or Hydra. Sections, each timed, its peak memory recorded, and a failure recorded
without stopping the others:
- `learner_small`, `learner_moonlight`: bfloat16 FSDP2 learner steps (world size 1: the real
  `ShardedLearner`, MuonClip with QK-Clip and bfloat16 Newton-Schulz, the GRPO loss) on the
  `small` preset and on Moonlight-16B-A3B's widths with few layers, both built on the meta
  device and initialised on the GPU shard by shard;
- `newton_schulz`: the orthogonalisation in bfloat16 against float32 (time, relative gap);
- `logprobs_bf16`: the learner's logprobs computing in bfloat16 against float32, same weights;
- `hf_checkpoint`: the small model written as a Hugging Face checkpoint and loaded back sharded
  from the meta device (`load_sharded`): the same logits;
- `dcp_round_trip`: model and optimizer state saved with torch.distributed.checkpoint, a step
  taken, the state loaded back: equal to what was saved;
- `ipc_transfer`: the reduced Moonlight's weights in bfloat16 buckets passed to a second process
  on the same GPU by CUDA IPC handle (opened and copied into its own buffers), against a
  device-to-device copy of the same bytes in one process.
It writes gpu_check.json and gpu_check.md to --out (default $OUT, else ./gpu_check_out) and
exits 1 if a section failed. `--tiny` shrinks every shape (and runs on CPU without a GPU): the
test suite runs it that way (tests/test_gpu_check.py) so that it cannot rot.

    python scripts/gpu_check.py            # on a GPU: about 2 minutes on an H100 (estimated)
    python scripts/gpu_check.py --tiny     # anywhere, in seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from selfcritic.config import ArchConfig, LearnerConfig, ModelConfig, OptimConfig  # noqa: E402
from selfcritic.learner.device import init_sharded, load_sharded  # noqa: E402
from selfcritic.learner.distributed import backend, full_tensor  # noqa: E402
from selfcritic.learner.learner import PolicyBatch  # noqa: E402
from selfcritic.learner.logprobs import pad_batch, token_logprobs  # noqa: E402
from selfcritic.learner.sharded import ShardedLearner  # noqa: E402
from selfcritic.model.families import family_config_dict  # noqa: E402
from selfcritic.optim.newton_schulz import orthogonalize  # noqa: E402
from selfcritic.rollout.device_sync import ipc_handle, open_ipc_handle, pack  # noqa: E402
from selfcritic.rollout.weights import split_into_buckets, to_checkpoint_names  # noqa: E402

MOONLIGHT_LAYERS = 3  # one dense layer, two MoE layers of 64 experts at Moonlight's widths
TIMED_STEPS = 3


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What one run of the check measures on: full size on a GPU, tiny for CPU tests."""

    sequences: int  # per learner step
    prompt_tokens: int
    completion_tokens: int
    newton_schulz: tuple[tuple[int, ...], ...]  # matrix stacks orthogonalised
    bucket_mb: float  # weight sync bucket size


FULL = Shapes(8, 64, 448, ((2048, 2048), (64, 1408, 2048)), 512.0)
TINY = Shapes(2, 8, 24, ((64, 64), (4, 48, 64)), 1.0)


def preset(name: str, tiny: bool) -> ModelConfig:
    """conf/model/NAME.yaml read with PyYAML (no Hydra here); Moonlight cut to a few layers;
    `tiny` shrinks the widths and keeps the structure."""
    import yaml

    fields = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    arch = fields.pop("arch")
    if name == "moonlight_16b_a3b":
        arch["num_hidden_layers"] = MOONLIGHT_LAYERS
    if tiny:
        arch |= {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128}
        arch |= {"moe_intermediate_size": 32, "n_routed_experts": 4, "kv_lora_rank": 32}
        arch |= {"qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16}
        arch |= {"num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64}
        arch |= {"num_experts_per_tok": 2, "vocab_size": min(arch["vocab_size"], 512)}
        arch["q_lora_rank"] = arch["q_lora_rank"] and 32
    return ModelConfig(**fields, arch=ArchConfig(**arch))


def transformers_config(model: ModelConfig):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(**family_config_dict(model))


class FreshLearner(ShardedLearner):
    """The real sharded learner on a model initialised on the device from the meta device (no
    checkpoint: the reduced Moonlight's files would be gigabytes)."""

    def __init__(self, config, cfg: LearnerConfig, optim: OptimConfig, device: torch.device):
        self.config, self.target = config, device
        super().__init__(Path("unused"), cfg, optim, trust_engine=False)

    def _load_model(self, model_path: Path, trainable: bool) -> torch.nn.Module:
        return init_sharded(self.config, self.target, torch.bfloat16, seed=0)


def policy_batch(shapes: Shapes, vocab: int, seed: int) -> PolicyBatch:
    """Random prompts and completions with advantages of +-1 (no engine logprobs: the learner's
    own are the old policy's, as `learner.old_logprobs=auto` has it on GPUs)."""
    generator = torch.Generator().manual_seed(seed)

    def ids(count: int) -> tuple[int, ...]:
        return tuple(torch.randint(3, vocab, (count,), generator=generator).tolist())

    rows = range(shapes.sequences)
    return PolicyBatch(
        prompts=[ids(shapes.prompt_tokens) for _ in rows],
        completions=[ids(shapes.completion_tokens) for _ in rows],
        old_logprobs=[() for _ in rows],
        advantages=[1.0 if row % 2 else -1.0 for row in rows],
        temperature=1.0,
        max_new_tokens=shapes.completion_tokens,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def learner_steps(learner: ShardedLearner, batch: PolicyBatch, device: torch.device) -> dict:
    """One warm-up step, then `TIMED_STEPS` timed ones: seconds per step, tokens per second and
    the last step's metrics that show MuonClip acted."""
    learner.update(batch)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(TIMED_STEPS):
        metrics = learner.update(batch)
    synchronize(device)
    seconds = (time.perf_counter() - start) / TIMED_STEPS
    tokens = sum(len(p) + len(c) for p, c in zip(batch.prompts, batch.completions, strict=True))
    return {
        "step_s": round(seconds, 4),
        "tokens_per_s": round(tokens / seconds),
        "loss": metrics["loss"],
        "grad_norm": metrics["grad_norm"],
        "max_logit": metrics.get("muonclip/max_logit"),
        "parameters": sum(p.numel() for p in learner.model.parameters()),
        "compute_dtype": "bfloat16",
    }


def learner_section(name: str, shapes: Shapes, tiny: bool, device: torch.device, keep: dict):
    model = preset(name, tiny)
    cfg = LearnerConfig(device=device.type, max_tokens_per_micro_batch=1 << 16)
    optim = OptimConfig(newton_schulz_dtype="bfloat16", qk_clip=True)
    learner = FreshLearner(transformers_config(model), cfg, optim, device)
    batch = policy_batch(shapes, model.arch.vocab_size, seed=0)
    result = learner_steps(learner, batch, device)
    keep[name] = (learner, batch)
    return result


def newton_schulz_section(shapes: Shapes, device: torch.device) -> dict:
    """bfloat16 against float32 on random stacks: milliseconds each and the relative gap."""
    result = {}
    for shape in shapes.newton_schulz:
        matrices = torch.randn(shape, device=device)
        timings = {}
        outputs = {}
        for dtype in (torch.float32, torch.bfloat16):
            orthogonalize(matrices, dtype=dtype)  # warm-up
            synchronize(device)
            start = time.perf_counter()
            outputs[dtype] = orthogonalize(matrices, dtype=dtype)
            synchronize(device)
            timings[dtype] = (time.perf_counter() - start) * 1000
        gap = (outputs[torch.bfloat16] - outputs[torch.float32]).norm() / outputs[
            torch.float32
        ].norm()
        result["x".join(map(str, shape))] = {
            "float32_ms": round(timings[torch.float32], 3),
            "bfloat16_ms": round(timings[torch.bfloat16], 3),
            "relative_gap": round(float(gap), 5),
        }
    return result


def logprobs_section(learner: ShardedLearner, batch: PolicyBatch, device: torch.device) -> dict:
    """The same weights computing in bfloat16 (the learner's) and in float32: token logprob gap."""
    exact = init_sharded(learner.model.config, device, torch.float32)
    exact.load_state_dict(learner.model.state_dict())
    ids, attention, mask = (
        t.to(device) for t in pad_batch(batch.prompts, batch.completions, learner.pad_id)
    )
    with torch.no_grad():
        low = token_logprobs(learner.model, ids, attention, 1.0)
        high = token_logprobs(exact, ids, attention, 1.0)
    gap = (low - high).abs()[mask.bool()]
    ratio = torch.exp((low - high)[mask.bool()])
    return {
        "mean_abs_gap": round(float(gap.mean()), 6),
        "p99_abs_gap": round(float(gap.quantile(0.99)), 6),
        "max_abs_gap": round(float(gap.max()), 6),
        "ratio_outside_0.8_1.25": round(float(((ratio < 0.8) | (ratio > 1.25)).float().mean()), 6),
    }


def hf_checkpoint_section(learner: ShardedLearner, batch: PolicyBatch, device: torch.device):
    """Write the learner's weights as a checkpoint (checkpoint names, safetensors) and load it
    back sharded from the meta device: the same float32 weights, the same logits."""
    from safetensors.torch import save_file

    state = {
        name: full_tensor(t).detach().float().cpu()
        for name, t in learner.model.state_dict().items()
    }
    with tempfile.TemporaryDirectory() as directory:
        learner.model.config.save_pretrained(directory)
        save_file(to_checkpoint_names(state), str(Path(directory) / "model.safetensors"))
        loaded = load_sharded(Path(directory), device, torch.bfloat16)
    worst = max(
        float((full_tensor(t).float().cpu() - state[name]).abs().max())
        for name, t in loaded.state_dict().items()
    )
    ids = torch.tensor([batch.prompts[0]], device=device)
    with torch.no_grad():
        before = learner.model(input_ids=ids, use_cache=False).logits.float()
        after = loaded(input_ids=ids, use_cache=False).logits.float()
    return {
        "max_weight_diff": worst,
        "max_logit_diff": float((before - after).abs().max()),
        # the same bfloat16 compute on the same weights (MoE scatter-adds may reorder on a GPU)
        "ok": worst == 0.0 and float((before - after).abs().max()) <= 1e-2,
    }


def dcp_section(learner: ShardedLearner, batch: PolicyBatch) -> dict:
    """Save, step, load: the model and optimizer state equal what was saved."""
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        learner.save_state(directory)
        saved_s = time.perf_counter() - start
        size = sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
        expected = {
            n: full_tensor(t).detach().clone() for n, t in learner.model.state_dict().items()
        }
        momentum = _first_momentum(learner)
        learner.update(batch)
        moved = any(
            not torch.equal(full_tensor(t), expected[n])
            for n, t in learner.model.state_dict().items()
        )
        start = time.perf_counter()
        learner.load_state(directory)
        loaded_s = time.perf_counter() - start
    same = all(
        torch.equal(full_tensor(t), expected[n]) for n, t in learner.model.state_dict().items()
    )
    return {
        "save_s": round(saved_s, 3),
        "load_s": round(loaded_s, 3),
        "bytes": size,
        "step_moved_weights": moved,
        "weights_restored": same,
        "momentum_restored": torch.equal(_first_momentum(learner), momentum),
    }


def _first_momentum(learner: ShardedLearner) -> torch.Tensor:
    muon = learner.optimizer.optimizers["muon"]
    state = next(iter(muon.state.values()))
    return full_tensor(state["momentum_buffer"]).detach().clone()


def _receiver(requests, replies) -> None:
    """The second process: opens each round's handles and copies them into its own buffers."""
    own: list[torch.Tensor] = []
    replies.put("ready")
    while (handles := requests.get()) is not None:
        opened = [open_ipc_handle(handle) for handle in handles]
        if not own:
            own = [torch.empty_like(tensor) for tensor in opened]
        for target, tensor in zip(own, opened, strict=True):
            target.copy_(tensor)
        if own[0].is_cuda:
            torch.cuda.synchronize()
        checksum = float(sum(t.float().sum() for t in own)) if len(own) < 64 else None
        del opened
        replies.put(("done", checksum))


def ipc_section(learner: ShardedLearner, shapes: Shapes, device: torch.device) -> dict:
    """The weights, cast to bfloat16 and packed in buckets, handed to another process by IPC
    handle and copied there; against copying the same buffers on the device in this process."""
    import torch.multiprocessing as mp

    state = to_checkpoint_names({n: full_tensor(t) for n, t in learner.model.state_dict().items()})
    buckets = split_into_buckets(state, int(shapes.bucket_mb * 1024 * 1024))
    buffers = [buffer for bucket in buckets for buffer, _ in pack(bucket, torch.bfloat16)]
    del state
    nbytes = sum(b.numel() * b.element_size() for b in buffers)
    context = mp.get_context("spawn")
    requests, replies = context.Queue(), context.Queue()
    child = context.Process(target=_receiver, args=(requests, replies), daemon=True)
    child.start()
    try:
        assert replies.get(timeout=120) == "ready"
        rounds = []
        for _ in range(TIMED_STEPS + 1):  # the first round allocates the receiver's buffers
            synchronize(device)
            start = time.perf_counter()
            requests.put([ipc_handle(buffer) for buffer in buffers])
            _, checksum = replies.get(timeout=300)
            rounds.append(time.perf_counter() - start)
        requests.put(None)
        child.join(timeout=60)
    finally:
        if child.is_alive():
            child.kill()
    ipc_s = min(rounds[1:])
    copy_s = _device_copy_seconds(buffers, device)
    expected = float(sum(b.float().sum() for b in buffers)) if len(buffers) < 64 else None
    return {
        "bytes": nbytes,
        "buckets": len(buffers),
        "ipc_s": round(ipc_s, 5),
        "device_copy_s": round(copy_s, 5),
        "ipc_over_copy": round(ipc_s / copy_s, 3),
        "ipc_gb_per_s": round(nbytes / ipc_s / 1e9, 2),
        "received_equal": checksum is None
        or abs(checksum - expected) <= 1e-3 * abs(expected) + 1e-3,
    }


def _device_copy_seconds(buffers: list[torch.Tensor], device: torch.device) -> float:
    targets = [torch.empty_like(buffer) for buffer in buffers]
    best = float("inf")
    for _ in range(TIMED_STEPS + 1):
        synchronize(device)
        start = time.perf_counter()
        for target, buffer in zip(targets, buffers, strict=True):
            target.copy_(buffer)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory_mb(device: torch.device) -> float:
    """The section's peak device memory (CUDA), or this process's peak resident memory (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_section(name: str, work, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        result = {"ok": True, **work()}
        result["ok"] = bool(result["ok"]) and all(
            result.get(key, True)
            for key in ("step_moved_weights", "weights_restored", "momentum_restored")
            + ("received_equal",)
        )
    except Exception as error:  # noqa: BLE001 - one section's failure is recorded, the rest run
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        result["traceback"] = traceback.format_exc()[-2000:]
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["peak_memory_mb"] = peak_memory_mb(device)
    status = "ok" if result["ok"] else f"FAILED {result['error']}"
    print(f"{name}: {status} ({result['seconds']} s)", flush=True)
    return result


def environment(device: torch.device) -> dict:
    import transformers

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
    }
    if device.type == "cuda":
        found["memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 1e9, 1)
    return found


def markdown(report: dict) -> str:
    """One table: each section, its status, time, peak memory and headline figures."""
    lines = [
        f"Device check tier A on {report['environment']['device']} "
        f"(torch {report['environment']['torch']}, transformers "
        f"{report['environment']['transformers']}){' [tiny shapes]' if report['tiny'] else ''}",
        "",
        "| section | ok | s | peak MiB | figures |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, result in report["sections"].items():
        figures = {
            k: v
            for k, v in result.items()
            if k not in ("ok", "seconds", "peak_memory_mb", "traceback")
        }
        shown = "; ".join(f"{k}={v}" for k, v in figures.items())
        lines.append(
            f"| {name} | {'yes' if result['ok'] else 'NO'} | {result['seconds']} | "
            f"{result['peak_memory_mb']} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU tests)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    args = parser.parse_args(argv)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: run with --tiny (reduced shapes on CPU)")
    shapes = TINY if args.tiny else FULL
    _join_one_rank_group(device)
    keep: dict = {}
    sections: dict[str, dict] = {}
    sections["learner_small"] = run_section(
        "learner_small", lambda: learner_section("small", shapes, args.tiny, device, keep), device
    )
    sections["learner_moonlight"] = run_section(
        "learner_moonlight",
        lambda: learner_section("moonlight_16b_a3b", shapes, args.tiny, device, keep),
        device,
    )
    sections["newton_schulz"] = run_section(
        "newton_schulz", lambda: newton_schulz_section(shapes, device), device
    )
    if "small" in keep:
        small = keep["small"]
        sections["logprobs_bf16"] = run_section(
            "logprobs_bf16", lambda: logprobs_section(*small, device), device
        )
        sections["hf_checkpoint"] = run_section(
            "hf_checkpoint", lambda: hf_checkpoint_section(*small, device), device
        )
        sections["dcp_round_trip"] = run_section(
            "dcp_round_trip", lambda: dcp_section(*small), device
        )
    source = keep.get("moonlight_16b_a3b") or keep.get("small")
    if source is not None:
        sections["ipc_transfer"] = run_section(
            "ipc_transfer", lambda: ipc_section(source[0], shapes, device), device
        )
    report = {"environment": environment(device), "tiny": args.tiny, "sections": sections}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    expected = {"learner_small", "learner_moonlight", "newton_schulz", "logprobs_bf16"}
    expected |= {"hf_checkpoint", "dcp_round_trip", "ipc_transfer"}
    passed = set(sections) == expected and all(s["ok"] for s in sections.values())
    return 0 if passed else 1


def _join_one_rank_group(device: torch.device) -> None:
    """A process group of one (FSDP2 and DCP need one), on a port the OS picks."""
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend(device.type), store=store, rank=0, world_size=1)


if __name__ == "__main__":
    sys.exit(main())
