"""Environments: options checked where they load, mixtures split by weight, and a user's
environment in one file outside the repository trained and evaluated by import path.

The end-to-end tests run the real loop (Ray, vLLM, the verifier pool's processes, the critic):
a user's environment from a temporary directory for 2 steps with a held-out evaluation, then
`python -m selfcritic.eval --env package.module:object` on its checkpoint; and a mixture of a
built-in and the user's environment for 2 steps, with per-environment metrics.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
from hydra import compose, initialize_config_dir

from selfcritic.config import Config, ConfigError, DataConfig
from selfcritic.envs.nano.options import NanoWorldOptions
from selfcritic.envs.registry import MixOptions, Mixture, build_environment, options_of
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config

# A user's task in one file: say the number back. Training draws numbers that are not multiples
# of 5; the held-out split is the multiples of 5.
USER_ENV = '''
"""Say the number back."""
import random
from dataclasses import dataclass

from rewards.base import RewardResult, Rubric, RubricAspect
from selfcritic.envs.base import Episode, Prompt, SingleTurn, Step

RUBRIC = Rubric("echo", (RubricAspect("same", "the answer is the number asked for"),))


def verify(completion: str, reference: str) -> RewardResult:
    return RewardResult(float(completion.strip() == reference))


class Echo(SingleTurn):
    @dataclass
    class Options:
        name: str = "echo_task:Echo"
        top: int = 99  # numbers 0..top

    verifier, rubric = "echo_task:verify", "echo_task:RUBRIC"

    def __init__(self, options, cfg):
        self.name, self.options, self.seed = "echo", options, cfg.data.seed

    def prompts(self, step, draw, count):
        rng = random.Random(f"echo:{self.seed}:{step}:{draw}")
        numbers = [n for n in range(self.options.top + 1) if n % 5]
        return [Prompt(f"Say {n}:", str(n)) for n in rng.choices(numbers, k=count)]

    def held_out(self):
        return [Prompt(f"Say {n}:", str(n)) for n in range(0, self.options.top + 1, 5)]


class EchoTwice(Echo):
    """Two turns: after the first answer the environment asks " Again:" and the second ends
    the episode."""

    max_turns = 2

    def reset(self, prompt):
        return Episode(prompt, state=0)

    def step(self, episode, turn, turn_ids):
        if episode.state == 0:
            episode.state = 1
            return Step(observation=" Again:")
        return Step(done=True)
'''


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    """The user's environment file in a directory outside the repository, importable."""
    directory = tmp_path / "user"
    directory.mkdir()
    (directory / "echo_task.py").write_text(textwrap.dedent(USER_ENV))
    monkeypatch.syspath_prepend(str(directory))
    return directory


def test_an_option_the_environment_lacks_is_named():
    with pytest.raises(ConfigError) as caught:
        options_of({"name": "nano_world", "max_operant": 3})
    assert str(caught.value).startswith("config key 'env.max_operant': not an option of")
    assert "max_operand" in str(caught.value)  # its options are listed


def test_option_values_are_checked_with_their_keys():
    with pytest.raises(ConfigError, match=r"config key 'env\.max_operand'"):
        options_of({"name": "nano_world", "max_operand": "many"})
    with pytest.raises(ConfigError, match=r"'env\.corpus\.wrong': must be >= 0 and <= 1, got 1\.5"):
        options_of({"name": "nano_world", "corpus": {"wrong": 1.5}})
    options = options_of({"name": "nano_world", "max_operand": 3})
    assert isinstance(options, NanoWorldOptions) and options.max_operand == 3
    with pytest.raises(ConfigError, match=r"'env\.name': unknown environment 'atlantis'"):
        options_of({"name": "atlantis"})


def test_mixture_counts_by_largest_remainder():
    mixture = Mixture(
        MixOptions(mix=[{"name": "nano_arithmetic", "label": k} for k in "abc"]), Config()
    )
    # 8 / 3 = 2.67 each: 2, 2, 2 and the 2 left to the first two (equal remainders)
    assert mixture.counts(8) == {"a": 3, "b": 3, "c": 2}
    assert mixture.counts(4) == {"a": 2, "b": 1, "c": 1}
    weighted = Mixture(
        MixOptions(
            mix=[
                {"name": "nano_arithmetic", "weight": 3, "label": "sums"},
                {"name": "nano_world", "weight": 1},
            ]
        ),
        Config(),
    )
    # 10 x 3/4 = 7.5 and 10 x 1/4 = 2.5: one left over, to the earlier part
    assert weighted.counts(10) == {"sums": 8, "nano_world": 2}
    prompts = weighted.prompts(step=1, draw=0, count=10)
    assert [p.env for p in prompts] == ["sums"] * 8 + ["nano_world"] * 2
    assert all(p.text.startswith("Q: ") for p in prompts[:8])
    # each part draws as it would alone: the same prompts, labelled
    alone = build_environment({"name": "nano_arithmetic"}, Config()).prompts(1, 0, 8)
    assert [p.text for p in prompts[:8]] == [p.text for p in alone]


def test_pass_at_n_counts_prompts_with_a_full_score():
    from selfcritic.eval.held_out import pass_at_n

    # three prompts of two samples: a pass, none (0.99 is not a pass), a pass among partials
    assert pass_at_n([1.0, 0.0, 0.99, 0.0, 0.5, 1.0], 2) == pytest.approx(2 / 3)
    assert pass_at_n([0.0, 1.0, 1.0], 1) == pytest.approx(2 / 3)


def test_a_mixture_refuses_two_parts_of_one_label_and_bad_weights():
    with pytest.raises(ConfigError, match=r"'env\.mix\.1\.label'"):
        Mixture(MixOptions(mix=[{"name": "nano_world"}, {"name": "nano_world"}]), Config())
    with pytest.raises(ConfigError, match=r"'env\.mix\.0\.weight'"):
        Mixture(MixOptions(mix=[{"name": "nano_world", "weight": 0}]), Config())
    with pytest.raises(ConfigError, match=r"'env\.mix\.0\.max_operant'"):
        Mixture(MixOptions(mix=[{"name": "nano_world", "max_operant": 2}]), Config())


def test_a_user_environment_loads_by_import_path(user_env):
    env = build_environment({"name": "echo_task:Echo", "top": 20}, Config())
    assert env.name == "echo" and env.options.top == 20
    prompts = env.prompts(step=3, draw=0, count=6)
    assert len(prompts) == 6 and all(int(p.reference) % 5 for p in prompts)
    assert [p.reference for p in env.held_out()] == ["0", "5", "10", "15", "20"]
    with pytest.raises(ConfigError, match=r"'env\.size': not an option of environment"):
        options_of({"name": "echo_task:Echo", "size": 3})


def _compose(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_what_a_user_environment_lacks_is_refused_before_any_work(user_env):
    """It has a held-out split (eval.every is fine) but no corpus and no probes."""
    base = ("env=custom", "env.name=echo_task:Echo")
    validate(_compose(*base, "eval.every=1"))
    for override, key in (
        ("learner.ptx_weight=0.5", "learner.ptx_weight"),
        ("warmstart.enabled=true", "warmstart.enabled"),
        ("critic.gate.source=env", "critic.gate.source"),
    ):
        with pytest.raises(ConfigError) as caught:
            validate(_compose(*base, override))
        assert str(caught.value).startswith(f"config key '{key}'"), caught.value


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_user_environment_outside_the_repo_trains_and_evaluates(user_env, cache_dir):
    """From the user's directory: 2 steps with evaluations (its held-out split scored by its
    verifier), then the evaluation CLI on the checkpoint with `--env package.module:object`."""
    out = user_env / "run"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.run",
            "+experiment=nano_quick",
            "env=custom",
            "env.name=echo_task:Echo",
            "+env.top=40",
            "trainer.steps=2",
            "eval.every=2",
            "eval.samples=2",
            "data.prompts_per_step=4",
            "sampling.max_tokens=4",
            f"trainer.output_dir={out}",
            f"trainer.cache_dir={cache_dir}",
            "tracking.wandb_mode=disabled",
        ],
        cwd=user_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = _records(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]  # evaluated before step 1 and after step 2
    for record in (records[0], records[2]):
        assert 0 <= record["eval/verifier_mean"] <= 1 and record["eval/verifier_failed"] == 0
        assert 1 <= record["eval/response_tokens"] <= 4
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and math.isfinite(record["reward/mean"])
        assert record["critic/judgements"] > 0  # the user's rubric, one aspect
    assert (out / "report.md").read_text().count("| verifier_mean |") == 1

    result = user_env / "eval.json"
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.eval",
            str(out / "checkpoint"),
            "--env",
            "echo_task:Echo",
            "eval.samples=2",
            "--json",
            str(result),
        ],
        cwd=user_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    metrics = json.loads(result.read_text())
    assert set(metrics) == {
        "eval/verifier_mean",
        "eval/verifier_failed",
        "eval/pass_at_n",
        "eval/greedy_mean",
        "eval/response_tokens",
        "eval/truncated_rate",
        "eval/no_final_answer",
        "eval/critic_agreement",
        "eval/critic_consistency",
        "eval/critic_invalid_rate",
        "eval/critic_pairs",
    }
    assert 0 <= metrics["eval/pass_at_n"] <= 1 and 0 <= metrics["eval/greedy_mean"] <= 1
    assert metrics["eval/pass_at_n"] >= metrics["eval/verifier_mean"] - 1e-9  # 0/1 scores
    assert 0 <= metrics["eval/verifier_mean"] <= 1 and metrics["eval/verifier_failed"] == 0


def test_a_mixture_trains_with_metrics_per_environment(user_env, tmp_path, cache_dir):
    """nano_arithmetic (weight 3, its exact_number verifier, the nano rubric) and the user's
    echo task (weight 1, its own verifier and rubric): 4 prompts a step split 3 + 1."""
    from selfcritic.trainer import Trainer

    cfg = _compose(
        "+experiment=nano_quick",
        "trainer.steps=2",
        "data.prompts_per_step=4",
        "sampling.max_tokens=4",
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
        "tracking.samples_every=1",
    )
    cfg.env = MixOptions(
        mix=[
            {"name": "nano_arithmetic", "weight": 3, "label": "sums", "max_operand": 5},
            {"name": "echo_task:Echo", "label": "echo", "top": 20},
        ]
    )
    cfg.data = DataConfig(prompts_per_step=4)
    validate(cfg)
    out = tmp_path / "mix"
    Trainer(cfg, out).run()
    records = _records(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["env/sums/groups"] == 3 and record["env/echo/groups"] == 1
        for label in ("sums", "echo"):
            assert 0 <= record[f"env/{label}/verifiable_mean"] <= 1
            assert 0 <= record[f"env/{label}/critic_abs_mean"] <= 1
            assert 1 <= record[f"env/{label}/response_length"] <= 4
        # the step's mean is the groups' mean: 3 parts of sums, 1 of echo
        mixed = (3 * record["env/sums/reward_mean"] + record["env/echo/reward_mean"]) / 4
        assert record["reward/mean"] == pytest.approx(mixed, abs=1e-6)
    rows = _records(out / "samples.jsonl")
    assert {row["prompt"][:2] for row in rows} <= {"Q:", "Sa"}


def test_two_turn_episodes_train_on_the_models_tokens_only(user_env, tmp_path, cache_dir):
    """An environment that answers the model once: the learner's tokens are the episodes'
    completion tokens less the environment's (" Again:", 7 characters, one token each)."""
    from selfcritic.trainer import Trainer

    cfg = _compose(
        "+experiment=nano_quick",
        "env=custom",
        "env.name=echo_task:EchoTwice",
        "trainer.steps=2",
        "data.prompts_per_step=2",
        "sampling.max_tokens=4",
        "critic.enabled=false",  # its verdict groups would join the policy's tokens
        "learner.filter_zero_variance=false",  # every episode is learned
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
    )
    validate(cfg)
    out = tmp_path / "turns"
    Trainer(cfg, out).run()
    for record in _records(out / "metrics.jsonl"):
        episodes = 2 * cfg.sampling.n
        completion_tokens = record["rollout/response_length"] * episodes  # with the observation
        assert record["learner/tokens"] == pytest.approx(completion_tokens - 7 * episodes)
        assert 2 <= completion_tokens / episodes - 7 <= 8  # two turns of 1 to 4 tokens


def test_the_eval_cli_switches_environments_and_refuses_one_without_a_split(user_env):
    """`--env` on a run trained elsewhere: the training's demands on its own environment
    (warm-start, PTX, probes) do not bind the other; one with nothing held out is refused."""
    from selfcritic.eval.__main__ import load_config

    cfg = load_config("nano", ["eval.samples=2"], None, "echo_task:Echo")
    assert cfg.env == {"name": "echo_task:Echo"} and cfg.eval.samples == 2
    with pytest.raises(ConfigError, match=r"'env\.name': environment 'nano_arithmetic' has no"):
        load_config("nano", [], None, "nano_arithmetic")
