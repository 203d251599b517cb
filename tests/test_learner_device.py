"""The learner on a device: a model loaded sharded from the meta device (2 gloo ranks on CPU,
1 NCCL rank on a GPU) matches the unsharded model, and device and dtype settings resolve and
are refused as documented (docs/gpus.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfcritic.learner.device import (
    compute_dtype,
    mixed_precision,
    parameters_on_meta,
    rank_device,
)
from selfcritic.learner.learner import trust_engine_logprobs

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "sharded_load_ranks.py"


def _run_ranks(model_path: Path, out: Path, ranks: int, device: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]  # a free port
    command += ["--nproc_per_node", str(ranks), str(SCRIPT), str(model_path), str(out), device]
    env = {"PYTHONPATH": f"{HERE.parent}:{HERE}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**_environ(), **env}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def _environ() -> dict:
    import os

    return dict(os.environ)


def _unsharded(model_path: Path) -> dict:
    """Logits and the watched gradient of the plain float32 model (`load_model`)."""
    from sharded_load_ranks import INPUT, WATCHED

    from selfcritic.model.build import load_model

    model = load_model(model_path)
    logits = model(input_ids=torch.tensor(INPUT), use_cache=False).logits.float()
    logits.square().mean().backward()
    return {"logits": logits.detach(), "grad": dict(model.named_parameters())[WATCHED].grad}


def test_two_ranks_load_their_shards_from_meta_and_match_the_unsharded_model(
    nano_model_path, tmp_path
):
    sys.path.insert(0, str(HERE))
    reference = _unsharded(nano_model_path)
    ranks = _run_ranks(nano_model_path, tmp_path, 2, "cpu")
    for label in ("float32", "bfloat16", "checkpointed"):
        shares = [rank[label] for rank in ranks]
        total = shares[0]["total"]
        # each rank holds its own shard only: together the whole model, each about half
        assert sum(share["local"] for share in shares) == total, label
        assert all(share["local"] < 0.6 * total for share in shares), label
        # the optimizer steps float32 master weights whatever the compute dtype
        assert all(share["master_dtypes"] == ["torch.float32"] for share in shares), label
        # bfloat16 keeps 8 bits of mantissa: sharded and unsharded logits rounded apart by up
        # to 0.054 on a 2-core AMD EPYC (2 of 1,760 over 0.05); float32 still checks to 1e-5
        tolerance = 1e-1 if label == "bfloat16" else 1e-5
        for share in shares:
            logits = torch.tensor(share["logits"])
            grad = torch.tensor(share["grad"])
            torch.testing.assert_close(logits, reference["logits"], atol=tolerance, rtol=0)
            # the gradient of the whole batch, summed over ranks (each rank saw the same input,
            # and FSDP2 sums: twice the one-process gradient)
            scale = reference["grad"].abs().max()
            torch.testing.assert_close(
                grad / 2,
                reference["grad"],
                atol=float(scale) * (0.05 if tolerance > 1e-4 else 1e-4),
                rtol=0,
            )


@pytest.mark.gpu
def test_one_gpu_rank_loads_from_meta_in_bfloat16(nano_model_path, tmp_path):
    sys.path.insert(0, str(HERE))
    reference = _unsharded(nano_model_path)
    (rank,) = _run_ranks(nano_model_path, tmp_path, 1, "cuda")
    share = rank["bfloat16"]
    assert share["local"] == share["total"]
    assert share["master_dtypes"] == ["torch.float32"]
    torch.testing.assert_close(
        torch.tensor(share["logits"]), reference["logits"], atol=5e-2, rtol=0
    )


def test_parameters_on_meta_keep_the_buffers_real(nano_model_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(nano_model_path))
    with parameters_on_meta():
        empty = AutoModelForCausalLM.from_config(config)
    built = AutoModelForCausalLM.from_config(config)
    assert all(p.is_meta for p in empty.parameters())
    assert isinstance(next(empty.parameters()), torch.nn.Parameter)
    for (name, buffer), (_, expected) in zip(
        empty.named_buffers(), built.named_buffers(), strict=True
    ):
        assert not buffer.is_meta, name
        assert torch.equal(buffer, expected), name  # e.g. the rotary inv_freq table
    # outside the context, parameters are real again
    assert not any(p.is_meta for p in built.parameters())


def test_device_and_dtype_resolve_as_documented():
    if torch.cuda.is_available():
        pytest.skip("the CPU resolution")
    assert rank_device("auto") == torch.device("cpu")
    assert rank_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="learner.gpus_per_rank=1"):
        rank_device("cuda")
    assert compute_dtype("auto", torch.device("cpu")) == torch.float32
    assert compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert compute_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert mixed_precision(torch.float32) is None
    policy = mixed_precision(torch.bfloat16)
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    # the engine's logprobs are trusted only with float32 on both sides, on CPU
    assert trust_engine_logprobs("auto", "float32", False, "auto")
    assert not trust_engine_logprobs("auto", "float32", False, "bfloat16")
    assert not trust_engine_logprobs("auto", "float32", True, "auto")
    assert not trust_engine_logprobs("auto", "bfloat16", False, "float32")


def test_gpu_settings_are_refused_before_work_where_no_gpu_backs_them():
    if torch.cuda.is_available():
        pytest.skip("refusals of a machine without GPUs")
    import selfcritic.cluster  # noqa: F401 - registers its checks
    from selfcritic.config import Config, ConfigError
    from selfcritic.preflight import validate

    cfg = Config()
    cfg.learner.device = "cuda"
    with pytest.raises(ConfigError, match=r"learner\.device.*gpus_per_rank=1"):
        validate(cfg)
    cfg.learner.device, cfg.learner.gpus_per_rank = "auto", 1.0
    with pytest.raises(ConfigError, match=r"learner\.gpus_per_rank.*has 0"):
        validate(cfg)


def test_gpu_bundles_hold_each_rank_and_the_engines_colocated_on_its_gpu():
    from selfcritic.cluster import engines_per_gpu, gpu_bundles
    from selfcritic.config import Config

    cfg = Config()
    assert gpu_bundles(cfg) is None  # a CPU learner reserves no bundle
    cfg.learner.world_size, cfg.learner.gpus_per_rank, cfg.learner.cpus_per_rank = 2, 0.5, 1.0
    cfg.rollout.num_engines, cfg.rollout.gpus_per_engine, cfg.rollout.cpus_per_engine = 3, 0.5, 2.0
    # 3 engines over 2 GPUs: at most 2 on one, so each bundle has room for 2 engines' CPUs
    assert engines_per_gpu(cfg) == 2
    assert gpu_bundles(cfg) == [{"CPU": 5.0, "GPU": 1.0}] * 2
    cfg.rollout.placement = "separate"  # engines on GPUs of their own: the bundles are the ranks'
    assert gpu_bundles(cfg) == [{"CPU": 1.0, "GPU": 1.0}] * 2


def test_colocated_shares_of_a_gpu_must_fit_in_it():
    import selfcritic.cluster as cluster
    from selfcritic.config import Config
    from selfcritic.preflight import Problems

    cfg = Config()
    cfg.learner.gpus_per_rank, cfg.rollout.gpus_per_engine = 0.5, 0.5
    problems = Problems()
    cluster._colocated_gpus_fit(cfg, problems)
    assert not problems.lines
    cfg.rollout.num_engines = 2  # two engines of 0.5 beside a rank of 0.5 on one GPU
    cluster._colocated_gpus_fit(cfg, problems)
    (line,) = problems.lines
    assert "rollout.gpus_per_engine" in line and "= 1.5 GPUs" in line
