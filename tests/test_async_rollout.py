"""One-step-off-policy rollout (`rollout.max_staleness=1`): batch t+1 is sampled while the learner
trains on batch t, so batch t is sampled with the weights of two steps before.

Three steps of the quick nano run with the real engines and learner: each batch's staleness is
what the schedule says (0 at the first step, 1 after) and never above the bound; a run that dies
after the step-2 checkpoint and is started again resumes with the batch sampled ahead, saved in
that checkpoint, and its third step equals the uninterrupted run's, sampled tokens, rewards and
weights alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runs import read_jsonl
from safetensors.torch import load_file

from selfcritic.trainer import AHEAD_FILE, Trainer

STEPS = 3
SAME = ("rollout/digest", "reward/mean", "learner/loss", "rollout/staleness", "weight_version")


def _train(out: Path, cache_dir: Path, *overrides: str) -> list[dict]:
    from hydra import compose, initialize_config_dir

    from selfcritic.preflight import validate
    from selfcritic.run import CONF_DIR, to_config

    settings = ["+experiment=nano_quick", f"trainer.steps={STEPS}", "rollout.max_staleness=1"]
    settings += ["trainer.checkpoint_every=2", f"trainer.cache_dir={cache_dir}", *overrides]
    settings += ["tracking.wandb_mode=disabled", "tracking.console=line"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=settings))
    validate(cfg)
    Trainer(cfg, out).run()
    return [r for r in read_jsonl(out / "metrics.jsonl") if r["step"] > 0]


class Died(Exception):
    """Stands for the run's death after its step-2 checkpoint."""


def test_one_step_off_policy_staleness_and_exact_resume(tmp_path, cache_dir, monkeypatch):
    straight = _train(tmp_path / "straight", cache_dir)
    assert [r["rollout/staleness"] for r in straight] == [0.0, 1.0, 1.0]
    assert all(r["time/rollout_wait"] >= 0 for r in straight[:-1])

    step = Trainer.step

    def dies_at_step_3(self, number):
        if number == 3:
            raise Died
        return step(self, number)

    monkeypatch.setattr(Trainer, "step", dies_at_step_3)
    with pytest.raises(Died):
        _train(tmp_path / "resumed", cache_dir)
    assert (tmp_path / "resumed" / "checkpoints" / "step-000002" / AHEAD_FILE).is_file()
    monkeypatch.setattr(Trainer, "step", step)
    resumed = _train(tmp_path / "resumed", cache_dir)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for mine, theirs in zip(resumed, straight, strict=True):
        assert {k: mine[k] for k in SAME} == {k: theirs[k] for k in SAME}
    weights = [
        load_file(p / "checkpoint" / "model.safetensors")
        for p in (tmp_path / "straight", tmp_path / "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


def test_overlap_without_separate_cores_is_warned():
    """Overlapped phases on shared cores slow each other (docs/benchmarks.md): warned."""
    from selfcritic.cluster import overlap_warning
    from selfcritic.config import Config

    cfg = Config()
    assert overlap_warning(cfg) is None  # synchronous: nothing overlaps
    cfg.rollout.max_staleness = 1
    assert "may share cores" in overlap_warning(cfg)  # not pinned
    cfg.rollout.cpu_cores, cfg.learner.cpu_cores = [0, 1], [1]
    assert "may share cores" in overlap_warning(cfg)  # core 1 in both
    cfg.rollout.cpu_cores = [0]
    assert overlap_warning(cfg) is None
