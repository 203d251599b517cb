"""The preflight: every setting checked before any work, each problem one line naming its key;
config.py a leaf; no import cycle in the package."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import selfcritic.config as config_module
from selfcritic.config import Config, ConfigError
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config

REPO = Path(__file__).resolve().parent.parent


def _schema_fields(cls, prefix: str = ""):
    hints = typing.get_type_hints(cls, vars(config_module))
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            yield from _schema_fields(kind, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", kind, item.metadata


def _numeric(kind) -> bool:
    """int or float, or either or None (a container's items are a component rule's)."""
    if typing.get_origin(kind) not in (None, typing.Union, types.UnionType):
        return False
    members = typing.get_args(kind) or (kind,)
    return any(m in (int, float) for m in members) and bool not in members


def test_every_numeric_setting_declares_its_range():
    undeclared = [
        key
        for key, kind, rules in _schema_fields(Config)
        if _numeric(kind) and not {"ge", "gt", "le", "lt"} & set(rules)
    ]
    assert undeclared == []


def _nano(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=["+experiment=nano", *overrides]))


# The holes found by trying main as a new user would (issue 26), each with the key named.
REFUSED = [
    ("optim.muon_lr=-0.01", "optim.muon_lr", "must be >= 0, got -0.01"),
    ("optim.adamw_lr=-1e-3", "optim.adamw_lr", "must be >= 0"),
    ("env.max_operand=-3", "env.max_operand", "must be >= 0, got -3"),
    ("rollout.cpus_per_engine=-1", "rollout.cpus_per_engine", "must be >= 0"),
    ("rollout.kv_cache_gib=-1", "rollout.kv_cache_gib", "must be > 0"),
    ("learner.kl_beta=inf", "learner.kl_beta", "must be a finite number"),
    ("critic.verdict_letters=[XX,XX]", "critic.verdict_letters", "two different"),
    ("optim.adamw_betas=[0.9,1.5]", "optim.adamw_betas", "in [0, 1)"),
    ("learner.world_size=64", "learner.cpus_per_rank", "learner.world_size"),
    ("reward.verifier=no_such_verifier", "reward.verifier", "registered verifiers"),
    ("critic.rubric=no_such_rubric", "critic.rubric", "unknown rubric"),
    ("trainer.lr_warmup_steps=40", "trainer.lr_warmup_steps", "below trainer.steps=40"),
    ("rollout.max_staleness=2", "rollout.max_staleness", "one weight version"),
    ("rollout.partial_tokens=8", "rollout.partial_tokens", "data.dynamic_sampling"),
    (
        "rollout.partial_tokens=40 data.dynamic_sampling=false",
        "rollout.partial_tokens",
        "not below sampling.max_tokens=40",
    ),
    ("learner.cpu_cores=[0,4096]", "learner.cpu_cores", "cores [4096] are not among"),
]


@pytest.mark.parametrize(("override", "key", "text"), REFUSED)
def test_a_bad_setting_is_one_line_naming_its_key(override, key, text):
    with pytest.raises(ConfigError) as caught:
        validate(_nano(*override.split()))
    lines = str(caught.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"config key '{key}'") and text in lines[0], lines[0]


def test_every_problem_is_reported_at_once(tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("")
    cfg = _nano(
        "sampling.n=1",
        "sampling.top_p=1.5",
        "rollout.engine=tgi",
        f"trainer.output_dir={afile}",
        f"model.path={tmp_path}",
    )
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    keys = [line.split("'")[1] for line in str(caught.value).splitlines()]
    assert keys == [  # the fields' own rules, then the components' (the engine's registry)
        "model.path",
        "sampling.n",
        "sampling.top_p",
        "trainer.output_dir",
        "rollout.engine",
    ]


def test_a_rubric_that_fails_to_load_is_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("aspects: [name: x, description: [unclosed")  # a YAML syntax error
    weighted = tmp_path / "weighted.yaml"
    weighted.write_text("aspects:\n- {name: x, description: d, weight: .inf}\n")
    worded = tmp_path / "worded.yaml"
    worded.write_text("aspects:\n- {name: x, description: d, weight: heavy}\n")
    for rubric in (broken, weighted, worded):
        with pytest.raises(ConfigError) as caught:
            validate(_nano(f"critic.rubric={rubric}"))
        lines = str(caught.value).splitlines()
        assert len(lines) == 1 and lines[0].startswith("config key 'critic.rubric'"), lines


def test_a_verifier_module_that_breaks_at_import_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('boom')\ndef v(c, r): 0\n")
    (tmp_path / "bad_syntax.py").write_text("def v(c, r) return 0\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("raises_at_import", "bad_syntax", "exits"):
        with pytest.raises(ConfigError) as caught:
            validate(_nano(f"reward.verifier={module}:v"))
        lines = str(caught.value).splitlines()
        assert len(lines) == 1 and lines[0].startswith("config key 'reward.verifier'"), lines


def test_config_is_a_leaf():
    """config.py imports the standard library only (Hydra inside `register_configs`)."""
    code = (REPO / "selfcritic" / "config.py").read_text()
    imported = [
        line.split()[1]
        for line in code.splitlines()
        if line.strip().startswith(("import ", "from ")) and not line.startswith(" " * 8)
    ]
    assert not [name for name in imported if name.startswith(("selfcritic", "rewards"))]
    assert sorted(imported) == ["__future__", "dataclasses", "hydra.core.config_store", "typing"]


def _package_modules() -> list[str]:
    names = []
    for root in ("selfcritic", "rewards"):
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone():
    """Each module imported first, in a fresh interpreter: an import cycle fails here (one
    interpreter for all, each import after clearing the package from sys.modules)."""
    script = (
        "import sys, importlib\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in ('selfcritic', "
        "'rewards')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {error!r}')\n"
        "print('\\n'.join(failed))\n"
    )
    # __main__ modules run when imported; sandbox_files are scripts the sandbox runs
    modules = [
        m for m in _package_modules() if not m.endswith("__main__") and ".sandbox_files" not in m
    ]
    result = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def _chars(text: str) -> list[int]:
    return [ord(c) for c in text]  # one token a character, as the nano tokenizer


def test_lengths_refused_only_when_nothing_can_fit():
    from selfcritic.config import DEFAULT_CRITIC_TEMPLATE
    from selfcritic.critic.judge import make_prompter
    from selfcritic.preflight import context_problems

    questions = ["Q: 3+4=\nA:", "Q: 12+13=\nA:"]  # the longest: 12 tokens
    aspects = [("correct", "right"), ("short", "brief")]
    cfg = Config()
    cfg.rollout.max_model_len = 28
    cfg.sampling.max_tokens = 17  # 12 + 17 > 28
    cfg.critic.verdict_mode, cfg.critic.max_tokens = "generative", 4
    empty = make_prompter(cfg.critic, _chars).prompt  # (question, "", "", aspect, description)

    def critic_prompt(question, aspect, description):
        return empty(question, "", "", aspect, description)

    problems = context_problems(cfg, _chars, questions, aspects, critic_prompt)
    assert len(problems) == 2
    assert (
        problems[0].startswith("config key 'sampling.max_tokens'") and "(12 tokens)" in problems[0]
    )
    # the template with the longest question, "correct" and empty responses: "C: " 3, the
    # question 12, "\nX: " 4, "\nY: " 4, "\ncorrect->" 10: 33; then 2 x 8 response tokens and
    # the 4 of the answer: 53
    template = DEFAULT_CRITIC_TEMPLATE.format(
        question=questions[1], first="", second="", aspect="correct", description="right",
        x="X", y="Y",
    )  # fmt: skip
    assert len(template) == 33 and len(critic_prompt(questions[1], "correct", "right")) == 33
    assert problems[1].startswith("config key 'critic.min_response_tokens'")
    assert "needs 53 tokens" in problems[1]
    cfg.rollout.max_model_len, cfg.sampling.max_tokens = 53, 16
    assert context_problems(cfg, _chars, questions, aspects, critic_prompt) == []


def test_what_needs_the_tokenizer_stops_a_run_before_the_warm_start(tmp_path, cache_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfcritic.run",
            "+experiment=nano",
            "rollout.max_model_len=40",
            "sampling.max_tokens=36",
            "critic.verdict_letters=[XX,YY]",  # two tokens each for the nano tokenizer
            f"trainer.output_dir={tmp_path / 'run'}",
            f"trainer.cache_dir={cache_dir}",
            "tracking.wandb_mode=disabled",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "config key" in line]
    assert [e.split("'")[1] for e in errors] == [
        "sampling.max_tokens",
        "critic.min_response_tokens",
        "critic.verdict_letters",
    ]
    assert "warm-start" not in result.stdout and "Traceback" not in result.stderr


def test_a_corrupt_probe_file_is_one_line_naming_the_source(tmp_path):
    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"question": "q", "better": "a", "worse": "b"}\n')  # no aspect
    with pytest.raises(ConfigError) as caught:
        validate(_nano(f"critic.gate.source={probes}"))
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith("config key 'critic.gate.source'"), lines
    assert "probes.jsonl:1 needs string fields" in lines[0] and lines[0].count("gate.source") == 1


def test_the_docs_table_of_checked_settings_is_the_codes():
    from selfcritic.preflight import rules_table

    text = (REPO / "docs" / "running.md").read_text()
    table = text.split("<!-- checked-settings -->\n")[1].split("\n<!-- /checked-settings -->")[0]
    assert table == rules_table(), "run: python -m selfcritic.preflight, and paste it"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["learner.ptx_weight=0.5"], "learner.ptx_weight"),  # nano_arithmetic has no corpus
        (["eval.every=5"], "eval.every"),  # and no held-out suite
    ],
)
def test_ptx_or_evaluation_without_a_source_for_them_is_refused(overrides, key):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(
            compose(config_name="config", overrides=["+experiment=nano_quick", *overrides])
        )
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert str(caught.value).startswith(f"config key '{key}'")
