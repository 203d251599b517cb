"""Training checkpoints and exact resume.

The exactness test runs the default experiment's shape (`SHAPE`: cosine rates, MuonClip, the
critic with calibration, PTX and KL) for 4 steps twice: once straight through, once killed with
SIGKILL (its whole process group: driver, Ray, engine and learner actors) after step 3, then run
again with the same command, which resumes from the step-2 checkpoint. Every metric of every
step (the sampled tokens' digest, rewards, losses, rates, MuonClip and router metrics, critic
verdicts), the sample table and the final weights must be identical, bit for bit: engines in
float32 on CPU with per-request seeds are deterministic here. Only wall-clock timings may
differ. Nothing the killed run left (semaphores, temporary files) may outlive the resumed run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from selfcritic.checkpoint import (
    check_output_dir,
    check_resumable,
    newest_checkpoint,
    training_settings,
    write_checkpoint,
)
from selfcritic.config import Config, ConfigError, TrainerConfig
from selfcritic.scratch import SCRATCH_ROOT, orphaned_semaphores, tag_alive

_WRITER = """
import sys, time
from pathlib import Path
from selfcritic.checkpoint import write_checkpoint

def slow_parts(directory):
    (directory / "model.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)

write_checkpoint(Path(sys.argv[1]), 4, slow_parts, keep=2)
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path):
    write_checkpoint(tmp_path, 2, lambda d: (d / "model.bin").write_bytes(b"old"), keep=2)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"  # killed in the middle of the write
    writer.kill()
    writer.wait()
    newest = newest_checkpoint(tmp_path)
    assert newest is not None and newest.name == "step-000002"
    assert (newest / "model.bin").read_bytes() == b"old"
    # the next checkpoint clears the half-written one and keeps the newest two
    for step in (4, 6):
        write_checkpoint(tmp_path, step, lambda d: (d / "model.bin").write_bytes(b"new"), 2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000004", "step-000006"]


def test_resume_refuses_changed_training_settings(tmp_path):
    saved = training_settings(Config())
    check_resumable(saved, Config(trainer=TrainerConfig(steps=50)))  # running longer is fine
    changed = Config()
    changed.sampling.n = 8
    with pytest.raises(ConfigError, match=r"sampling\.n"):
        check_resumable(saved, changed)
    # a checkpoint from before a setting existed: resumable while the setting is at its default
    older = {k: v for k, v in saved.items() if k != "trainer.lr_schedule"}
    check_resumable(older, Config())
    changed = Config()
    changed.trainer.lr_schedule = "cosine"
    with pytest.raises(ConfigError, match=r"trainer\.lr_schedule"):
        check_resumable(older, changed)
    # an output directory with a complete checkpoint is resumed, not refused
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="trainer.output_dir"):
        check_output_dir(tmp_path, TrainerConfig())
    write_checkpoint(tmp_path, 2, lambda d: None, keep=2)
    check_output_dir(tmp_path, TrainerConfig())
    with pytest.raises(ConfigError, match="trainer.output_dir"):
        check_output_dir(tmp_path, TrainerConfig(resume=False))


# The default experiment's shape, small: a short cached warm-start (sums to 3, so the weak actor
# gets some right and the calibration pairs exist by step 3), then RL with the cosine rates,
# MuonClip, the generative critic, RL-form calibration, PTX and KL; a sample table every step.
SHAPE = [
    "+experiment=nano",
    "warmstart.steps=30",
    "env.corpus.actor_examples=32",
    "env.corpus.critic_examples=8",
    "warmstart.ptx_per_step=4",
    "env.max_operand=3",
    "data.prompts_per_step=4",
    "critic.gate.pairs_per_aspect=4",
    "critic.gate.tie_pairs_per_aspect=4",
    "eval.every=0",
    "trainer.steps=4",
    "trainer.checkpoint_every=2",
    "tracking.samples_every=1",
    "tracking.wandb_mode=disabled",
]


def _command(output_dir, cache_dir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "selfcritic.run",
        *SHAPE,
        f"trainer.output_dir={output_dir}",
        f"trainer.cache_dir={cache_dir}",
    ]


def _records(path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


def _samples(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN (no calibration pair) equals NaN


def _weights(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoint" / "model.safetensors")


def _leftovers(before: set[str]) -> list[str]:
    """Temporary files of runs that no longer run: scratch directories of dead drivers, vLLM
    rendezvous files outside them, orphaned multiprocessing semaphores."""
    tmp = Path(tempfile.gettempdir())
    scratch = tmp / SCRATCH_ROOT
    dead = [p.name for p in scratch.iterdir() if not tag_alive(p.name)] if scratch.is_dir() else []
    stray = [p.name for p in tmp.glob("vllm_dist_*") if p.name not in before]
    return dead + stray + [p.name for p in orphaned_semaphores()]


def test_killed_and_resumed_run_matches_the_uninterrupted_one(tmp_path, cache_dir):
    before = {p.name for p in Path(tempfile.gettempdir()).glob("vllm_dist_*")}
    straight = subprocess.run(
        _command(tmp_path / "a", cache_dir), capture_output=True, text=True, timeout=600
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    metrics = tmp_path / "b" / "metrics.jsonl"
    first = subprocess.Popen(
        _command(tmp_path / "b", cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes Ray and actors too
    )
    deadline = time.monotonic() + 600
    while not (metrics.exists() and '"step": 3' in metrics.read_text()):
        assert first.poll() is None and time.monotonic() < deadline, "run ended before step 3"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert newest_checkpoint(tmp_path / "b").name == "step-000002"
    assert '"step": 3' in (tmp_path / "b" / "samples.jsonl").read_text()  # to be cut back

    resumed = subprocess.run(
        _command(tmp_path / "b", cache_dir), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "(step 2)" in resumed.stdout
    a, b = _records(tmp_path / "a" / "metrics.jsonl"), _records(metrics)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]  # step 3 logged once, by the resumed run
    # the shape under test: cosine rates over 4 steps, calibration pairs and PTX after resume
    assert [round(a[s]["learner/lr_scale"], 6) for s in a] == [1.0, 0.775, 0.325, 0.1]
    assert a[3]["critic/calibration_pairs"] + a[4]["critic/calibration_pairs"] > 0
    assert a[3]["learner/ptx_loss"] > 0 and a[4]["learner/kl"] != 0
    for step in (3, 4):
        compared = [k for k in a[step] if not k.startswith("time/") and "per_second" not in k]
        assert len(compared) > 60
        different = {
            k: (a[step][k], b[step].get(k))
            for k in compared
            if not _same(a[step][k], b[step].get(k))
        }
        assert not different, f"step {step}: {different}"
    assert a[3]["rollout/digest"] == b[3]["rollout/digest"]  # the same tokens, first resumed step
    assert a[4]["weight_version"] == b[4]["weight_version"] == 4
    # the sample table cut back to the checkpoint's step, then written again: each step once
    samples_a, samples_b = (
        _samples(tmp_path / "a" / "samples.jsonl"),
        _samples(tmp_path / "b" / "samples.jsonl"),
    )
    assert [r["step"] for r in samples_b] == [r["step"] for r in samples_a]
    assert samples_b == samples_a
    # the final weights, bit for bit
    weights_a, weights_b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), name
    assert _leftovers(before) == []  # the resumed run cleared what the killed one left
