"""The device check of tier A (scripts/gpu_check.py) runs here in its reduced form, so that it
cannot rot before a GPU runs it in full (docs/gpus.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _check(tmp_path: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((tmp_path / "gpu_check.json").read_text())


def test_the_device_check_runs_in_its_reduced_form_without_ray_vllm_or_hydra(tmp_path):
    # the bare GPU machine has none of them: the script must not need them
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    for name in ("ray", "vllm", "hydra", "omegaconf", "wandb"):
        (blocker / f"{name}.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine')"
        )
    os.environ["PYTHONPATH"] = f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        report = _check(tmp_path, "--tiny")
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    sections = report["sections"]
    assert all(section["ok"] for section in sections.values()), sections
    for name in ("learner_small", "learner_moonlight"):
        assert sections[name]["grad_norm"] > 0 and sections[name]["step_s"] > 0
    # a checkpoint written and loaded back sharded from the meta device: the very weights
    assert sections["hf_checkpoint"]["max_weight_diff"] == 0.0
    # save, step (the weights move), load: what was saved, optimizer state included
    dcp = sections["dcp_round_trip"]
    assert dcp["step_moved_weights"] and dcp["weights_restored"] and dcp["momentum_restored"]
    # bfloat16 compute differs from float32, by little
    gap = sections["logprobs_bf16"]
    assert 0 < gap["mean_abs_gap"] < 0.05 and gap["max_abs_gap"] < 0.5
    for figures in sections["newton_schulz"].values():
        if isinstance(figures, dict):
            assert figures["relative_gap"] < 0.1
    assert sections["ipc_transfer"]["received_equal"]
    assert (tmp_path / "gpu_check.md").read_text().count("| yes |") == len(sections)


@pytest.mark.gpu
def test_the_device_check_passes_in_full_on_a_gpu(tmp_path):
    report = _check(tmp_path)
    assert report["sections"]["ipc_transfer"]["ipc_over_copy"] <= 3.0
