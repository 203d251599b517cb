"""The whole loop on real components: Ray, vLLM, a verifier, the self-critic, Muon, weight sync.

`test_training_loop_end_to_end` runs the trainer in-process for three steps; the CLI test (slow:
tests/test_nano_run.py runs the README's main command in the default suite) runs
`+experiment=nano_quick` for two steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config
from selfcritic.trainer import Trainer

EXPECTED_KEYS = {
    "step",
    "reward/mean",
    "reward/verifiable_mean",
    "reward/verifier_errors",
    "critic/invalid_rate",
    "critic/position_consistency",
    "critic/judgements",
    "critic/tokens",
    "critic/agreement",
    "critic/calibration_examples",
    "critic/length_bias",
    "critic/score_std",
    "critic/weight_lag",
    "critic/decisive/correct",
    "learner/loss",
    "learner/grad_norm",
    "learner/clip_fraction",
    "rollout/response_length",
    "rollout/tokens_per_second",
    "weight_version",
    "muonclip/max_logit",
    "muonclip/heads_clipped",
    "moe/imbalance_max",
    "time/rollout",
    "time/verify",
    "time/critic",
    "time/learn",
    "time/sync",
    "time/step",
}


def _train(overrides: list[str], out) -> tuple:
    """Compose, check and run a config in this process; (config, its metrics records)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = to_config(compose(config_name="config", overrides=overrides))
    validate(config)
    Trainer(config, out).run()
    return config, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_loop_end_to_end(tmp_path, cache_dir):
    from transformers import AutoModelForCausalLM

    overrides = [
        "+experiment=nano_quick",
        "trainer.steps=3",
        "learner.logprob_check_every=2",  # engine logprobs on steps 1 and 2, not 3
        "sampling.temperature=0.7",
        "sampling.max_tokens=6",
        "reward.verifier=verifier_fixtures.digit_share",
        "reward.token_budget=5",
        "reward.budget_penalty=0.1",
        "ray.num_cpus=2",
        "rollout.cpus_per_engine=0.5",  # two engines: the policy's and the lagged critic's
        "critic.weights=lagged",
        "tracking.samples_every=2",
        "tracking.samples_groups=1",
        # close the loop with a dense verifier: >= 30% digits counts as "correct", none as wrong;
        # calibration both as examples for the learner and as RL groups of sampled verdicts
        "critic.calibration.correct_min=0.3",
        "critic.calibration.wrong_max=0.0",
        "critic.calibration.form=both",
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
    ]
    _, records = _train(overrides, tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert set(record) >= EXPECTED_KEYS, EXPECTED_KEYS - set(record)
        assert math.isfinite(record["learner/loss"]) and math.isfinite(record["learner/grad_norm"])
        # the engine's sampling logprobs equal the learner's own on the same weights, on the
        # steps that ask for them (the parity check, learner.logprob_check_every)
        if record["step"] in (1, 2):
            assert record["learner/logprob_diff_max"] < 1e-4
            assert record["learner/logprob_diff_mean"] <= record["learner/logprob_diff_max"]
        else:
            assert "learner/logprob_diff_max" not in record
            assert "learner/logprob_diff_mean" not in record
        assert "learner/tis_clipped_fraction" not in record  # trusted: no TIS
        # every group got its 4 sampled pairs (each response meets 2 others) judged on both
        # rubric aspects, each verdict read from the engine's verdict-token probabilities (the
        # default mode: nothing to parse, nothing invalid)
        assert record["critic/judgements"] == 8 * 4 * 2
        assert record["critic/invalid_rate"] == 0.0
    assert [r["weight_version"] for r in records] == [1, 2, 3]
    # a sample table every 2 steps (tracking.samples_every=2): the first group's 4 responses
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [row["step"] for row in samples] == [2] * 4
    assert {"prompt", "response", "verifier_score", "critic_score", "reward"} <= set(samples[0])
    # each response meets 2 others, on both aspects of the nano rubric
    assert samples[0]["critic_outcomes"].count(" vs #") == 4
    # the closed loop ran: correct-vs-wrong pairs judged, examples trained, verdicts rewarded
    assert sum(r["critic/calibration_pairs"] for r in records) > 0
    assert any(r.get("learner/calibration_loss", 0) > 0 for r in records)
    assert any(0 <= r.get("critic/rl_verdict_reward", -1) <= 1 for r in records)
    assert all(0 <= r["critic/agreement"] <= 1 for r in records if r["critic/calibration_pairs"])
    # the lagged critic judges with the weights of one update ago, on its own engine
    assert [r["critic/weight_lag"] for r in records] == [0, 1, 1]
    # 6 tokens sampled against a budget of 5: a random model rarely stops early
    assert max(r["reward/over_budget_rate"] for r in records) > 0
    assert records[-1]["learner/grad_norm"] > 0

    checkpoint = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    initial = AutoModelForCausalLM.from_pretrained(str(config_model_path(cache_dir)))
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(checkpoint.parameters(), initial.parameters(), strict=True)
    )
    assert moved, "training did not change the checkpoint's weights"


def config_model_path(cache_dir):
    from selfcritic.config import ModelConfig
    from selfcritic.model.build import prepare_model

    return prepare_model(ModelConfig(), cache_dir)


@pytest.mark.slow  # test_nano_run.py runs the README's main command (+experiment=nano) so
def test_readme_command_runs(tmp_path, cache_dir):
    """`python -m selfcritic.run +experiment=nano_quick`, shortened to two steps."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.run",
            "+experiment=nano_quick",
            "trainer.steps=2",
            f"hydra.run.dir={tmp_path}",
            f"trainer.cache_dir={cache_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stdout
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    # the console shows only what matters: no known noise (selfcritic/noise.py) at the syncs
    console = result.stdout + result.stderr
    for noise in ("were not loaded", "Failed to load weights", "Token authentication is"):
        shown = [line for line in console.splitlines() if noise in line]
        assert not shown, shown[:3]


def test_ppo_epochs_in_a_run(tmp_path, cache_dir):
    """`learner.epochs=2 learner.minibatches_per_epoch=2`: every RL step is 4 optimizer steps
    from a fixed old policy; the second epoch's ratio leaves 1."""
    overrides = [
        "+experiment=nano_quick",
        "trainer.steps=2",
        "learner.epochs=2",
        "learner.minibatches_per_epoch=2",
        "learner.filter_zero_variance=false",  # every group learned: the batch is never empty
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
    ]
    _, records = _train(overrides, tmp_path)
    for record in records:
        assert record["learner/optimizer_steps"] == 4
        assert record["learner/ratio_mean_epoch_1"] == pytest.approx(1.0, abs=0.05)
        assert record["learner/ratio_mean_epoch_2"] != pytest.approx(1.0, abs=1e-4)


def test_a_bfloat16_learner_logs_the_gap_every_step(tmp_path, cache_dir):
    """`learner.compute_dtype=bfloat16` on CPU: `auto` no longer trusts the engine, so the
    engine reports its logprobs on every step (not every `logprob_check_every`-th) and every
    step logs the real bfloat16 gap and the TIS share."""
    overrides = [
        "+experiment=nano_quick",
        "trainer.steps=3",
        "learner.compute_dtype=bfloat16",
        "learner.logprob_check_every=10",
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
    ]
    _, records = _train(overrides, tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        mean, largest = record["learner/logprob_diff_mean"], record["learner/logprob_diff_max"]
        assert 1e-4 < mean <= largest  # far above float32 parity (about 1e-6)
        assert 0.0 <= record["learner/tis_clipped_fraction"] < 0.05
