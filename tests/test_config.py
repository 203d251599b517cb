"""Configuration: composition with the typed schema, and bad input failing before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from selfcritic.config import ConfigError
from selfcritic.envs.nano.options import NanoWorldOptions
from selfcritic.envs.nano.world import side_by_side_verdict_tokens
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=nano_quick", *overrides])


@pytest.mark.parametrize("experiment", ["nano", "nano_headform"])
def test_nano_experiments_are_valid(experiment):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = to_config(compose(config_name="config", overrides=[f"+experiment={experiment}"]))
    validate(config)
    assert isinstance(config.env, NanoWorldOptions) and config.warmstart.enabled
    assert config.eval.every == 10 and config.critic.verdict_mode == "generative"
    # the default writes the marks side by side; nano_headform puts the head form back
    assert config.env.corpus.side_by_side == (experiment == "nano")
    assert config.env.max_operand == 14 and config.critic.gate.source == "env"
    assert config.critic.max_tokens == (24 if experiment == "nano" else 20)
    assert config.data.prompts_per_step == 16
    assert config.trainer.steps == (40 if experiment == "nano" else 30)
    assert config.warmstart.steps == (320 if experiment == "nano" else 250)


def test_side_by_side_verdict_length_counted_by_hand():
    # " =28 X38=28- Y28=28+ #Y": 23 characters, and the end token
    assert side_by_side_verdict_tokens(14, 2) == len(" =28 X38=28- Y28=28+ #Y") + 1
    assert side_by_side_verdict_tokens(60, 2) == len(" =120 X130=120- Y120=120+ #Y") + 1
    # on_task with five-letter words: the word is wider than any sum
    assert side_by_side_verdict_tokens(14, 5) == len(" =abcde Xabcdf=abcde- Yabcde=abcde+ #Y") + 1


def test_nano_experiment_composes_into_typed_config():
    config = to_config(compose_config())
    validate(config)
    assert config.model.arch.kv_lora_rank == 512
    assert config.model.arch.qk_rope_head_dim == 64
    assert config.critic.schedule == "sampled" and config.critic.comparisons_per_response == 2
    assert config.critic.calibration.aspect == "correct"
    assert config.sampling.n == 4


def test_misspelled_key_names_the_key():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("trainer.stepz=3")
    assert "stepz" in str(error.value.__cause__ or error.value)


def test_wrong_type_names_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as error:
        compose_config("sampling.n=four")
    assert "sampling.n" in str(error.value) + str(error.value.__cause__)


def test_missing_model_path_names_the_key(tmp_path):
    config = to_config(compose_config(f"model.path={tmp_path / 'nowhere'}"))
    with pytest.raises(ConfigError, match="model.path"):
        validate(config)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sampling.n=1", "sampling.n"),
        # 5 responses meeting 3 others each: 15 ends of pairs cannot pair up
        ("sampling.n=5 critic.comparisons_per_response=3", "critic.comparisons_per_response"),
        ("critic.schedule=random", "critic.schedule"),
        ("critic.aggregation=elo", "critic.aggregation"),
        ("critic.template='{question}{first}'", "critic.template"),
        ("critic.verdict_letters=[X,X]", "critic.verdict_letters"),
        ("critic.weights=yesterday", "critic.weights"),
        ("critic.calibration.wrong_max=1.0", "critic.calibration.wrong_max"),
        ("critic.calibration.target=0.4", "critic.calibration.target"),
        ("reward.combine=sum", "reward.combine"),
        # a frozen critic's engine + the policy's + the learner: 3 CPUs on a 2-CPU Ray
        ("ray.num_cpus=2 critic.weights=frozen", "rollout.cpus_per_engine"),
        ("learner.world_size=0", "learner.world_size"),
        ("rollout.threads_per_engine=0", "rollout.threads_per_engine"),
        ("critic.gate.source=/no/such/probes.jsonl", "critic.gate.source"),
        ("critic.gate.min_agreement=0.4", "critic.gate.min_agreement"),
        ("tracking.console=loud", "tracking.console"),
        ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints"),
        ("trainer.lr_schedule=step", "trainer.lr_schedule"),
        ("trainer.lr_warmup_steps=30", "trainer.lr_warmup_steps"),  # nano runs 30 steps
        ("trainer.lr_final_fraction=1.5", "trainer.lr_final_fraction"),
        ("critic.rubric=/no/such/rubric.yaml", "critic.rubric"),
        ("reward.verifier=nope", "reward.verifier"),
        ("critic.rubric=nope", "critic.rubric"),
        ("tracking.wandb_mode=sometimes", "tracking.wandb_mode"),
        ("env=custom env.name=wikipedia", "env.name"),
        ("env=nano_world env.heldout_fraction=0", "env.heldout_fraction"),
        ("env=nano_world env.corpus.wrong=1.5", "env.corpus.wrong"),
        ("warmstart.lr_schedule=wsd", "warmstart.lr_schedule"),
        ("warmstart.lr_decay_fraction=0", "warmstart.lr_decay_fraction"),
        ("warmstart.lr_final_fraction=-0.1", "warmstart.lr_final_fraction"),
        ("env=nano_world env.corpus.on_task_share=1.2", "env.corpus.on_task_share"),
        ("env=nano_world env.corpus.mark_weight=0", "env.corpus.mark_weight"),
        # the side-by-side verdict is 24 tokens with its end; 20 would cut it short
        ("env=nano_world env.corpus.side_by_side=true critic.max_tokens=20", "critic.max_tokens"),
        # sums to 120, wrong ones to 130: " =120 X130=120- Y120=120+ #Y" and its end, 29
        (
            "env=nano_world env.corpus.side_by_side=true critic.max_tokens=24 env.max_operand=60",
            "critic.max_tokens",
        ),
        # the held-out evaluation and the warm-start need what nano_arithmetic has not
        ("eval.every=5", "eval.every"),
        ("warmstart.enabled=true", "warmstart.enabled"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(to_config(compose_config(*override.split())))


@pytest.mark.parametrize(
    ("override", "expected"),
    [("trainer.stepz=3", "stepz"), ("model.path=/no/such/checkpoint", "model.path")],
)
def test_cli_fails_before_any_work(tmp_path, override, expected):
    """The entry point exits non-zero, names the key, and writes no run output."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.run",
            "+experiment=nano_quick",
            override,
            f"hydra.run.dir={tmp_path / 'run'}",
            f"trainer.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert expected in result.stderr
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_output_directory_holding_a_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.run",
            "+experiment=nano_quick",
            f"trainer.output_dir={run}",
            f"trainer.cache_dir={tmp_path / 'cache'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "trainer.output_dir" in result.stderr and "trainer.overwrite=true" in result.stderr
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'  # untouched
    assert not (tmp_path / "cache").exists()  # no work started


def test_wandb_mode_auto_goes_online_only_when_logged_in(tmp_path, monkeypatch):
    from selfcritic.tracking import resolve_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode("auto") == "offline"  # no netrc at all
    netrc.write_text("machine github.com\n  login x\n  password y\n")
    assert resolve_wandb_mode("auto") == "offline"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password KEY\n")  # `wandb login`
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert resolve_wandb_mode("disabled") == "disabled"  # an explicit mode is kept
