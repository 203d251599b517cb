"""The dashboard's definition (selfcritic/panels.py) and its wandb workspace, built offline:
`python -m selfcritic.dashboard RUN_OR_PROJECT`. No wandb server is reached: the tests read
the view the library would send (`Workspace._to_model`, as `save` serialises it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfcritic import dashboard
from selfcritic.dashboard import DashboardError, Target, build_workspace, parse_target, view_spec
from selfcritic.panels import SECTIONS, Panel, PanelError, Section, covered, layout

SOURCE = Path(__file__).resolve().parents[1] / "selfcritic"
# names the code builds with an f-string: (its template, the literal filled in)
BUILT = {
    "learner/informative_groups": ('f"{panel}/informative_groups"', '"learner"'),
    "critic/rl/informative_groups": ('f"{panel}/informative_groups"', '"critic/rl"'),
}


def test_exact_names_are_logged_by_the_code():
    """Each exact metric name of the definition appears in the code that logs it (selfcritic/
    or rewards/, whose BatchStats names the verifier failures; learner
    metrics are logged by their bare key and put under learner/ by the trainer)."""
    skip = {"panels.py", "dashboard.py", "plot.py"}
    files = [*SOURCE.rglob("*.py"), *(SOURCE.parent / "rewards").rglob("*.py")]
    code = "".join(p.read_text() for p in files if p.name not in skip)
    learner = "".join(p.read_text() for p in (SOURCE / "learner").rglob("*.py"))
    assert 'return name if "/" in name else f"learner/{name}"' in code
    names = [name for section in SECTIONS for panel in section.panels for name in panel.metrics]
    assert len(names) == len(set(names)), "a metric drawn twice"
    for name in names:
        if name in BUILT:
            template, literal = BUILT[name]
            assert template in code and literal in code, name
        elif name.startswith("learner/") and f'"{name.removeprefix("learner/")}"' in learner:
            continue
        else:
            assert f'"{name}"' in code, f"{name} is not logged by selfcritic/ or rewards/"


# (pattern panel's title, names it must draw, names it must not)
PATTERN_CASES = [
    ("Reward per environment", ["env/sums/reward_mean"], ["reward/mean", "env/a/b/reward_mean"]),
    (
        "Agreement with verifiers per aspect",
        ["critic/verifier_agreement/correct", "critic/verifier_agreement/no_praise"],
        ["critic/agreement", "critic/gate_agreement/no_praise"],
    ),
    ("Probe gate: agreement per aspect", ["critic/gate_agreement/on_task"], []),
    (
        "Injection flips (held-out)",
        ["eval/critic_injection_flip_rate", "eval/nano/critic_injection_flip_rate"],
        [],
    ),
    (
        "Injection flips per family (held-out pairs)",
        [
            "eval/critic_injection_flip_rate/authority",
            "eval/critic_injection_flip_rate_held_out",
            "eval/nano/critic_injection_flip_rate/claim",
        ],
        ["eval/critic_injection_flip_rate"],
    ),
    (
        "Injection phrasings in the policy's samples",
        ["policy/injection_rate", "policy/injection_rate/claim", "policy/watched_rate"],
        ["eval/injection_rate"],
    ),
    ("Clip fraction", ["learner/clip_fraction", "learner/clip_fraction_epoch_2"], ["learner/kl"]),
    (
        "Response length (tokens)",
        ["rollout/response_length", "env/echo/response_length"],
        ["eval/response_tokens"],
    ),
    (
        "Max attention logit (QK-Clip)",
        ["muonclip/max_logit", "muonclip/max_logit/layer_12"],
        ["muonclip/heads_clipped"],
    ),
    ("MoE router imbalance", ["moe/imbalance_max", "moe/imbalance/layer_1"], []),
    (
        "Held-out verifier score",
        ["eval/verifier_mean", "eval/sums/pass_at_n", "eval/greedy_mean"],
        ["eval/verifier_failed"],
    ),
    (
        "Held-out accuracy and defects (nano world)",
        ["eval/accuracy", "eval/defect_rate"],
        ["eval/critic_worked_answer_accuracy"],
    ),
    (
        "Critic agreement per aspect (held-out)",
        ["eval/critic_agreement_no_meta", "eval/critic_agreement_correct"],
        ["eval/critic_agreement"],
    ),
]


@pytest.mark.parametrize("title, drawn, not_drawn", PATTERN_CASES)
def test_patterns_select_their_series(title, drawn, not_drawn):
    (panel,) = [p for s in SECTIONS for p in s.panels if p.title == title]
    assert panel.pattern is not None
    assert set(panel.select(drawn + not_drawn)) == set(drawn)


def test_sections_and_coverage():
    assert [s.title for s in SECTIONS] == [
        "Rewards",
        "Critic health",
        "Policy health",
        "Optimizer",
        "Time per phase",
        "Evaluation",
    ]
    for name in ["critic/invalid_rate", "critic/skipped_too_long", "learner/entropy", "time/sync"]:
        assert covered(name)
    for name in ["weight_version", "rollout/digest", "learner/tokens"]:
        assert not covered(name)
    found = layout(
        ["time/rollout", "time/learn", "moe/imbalance/layer_10", "moe/imbalance/layer_2"]
    )
    assert [(s.key, [(p.title, names) for p, names in panels]) for s, panels in found] == [
        (
            "optimizer",
            [("MoE router imbalance", ["moe/imbalance/layer_2", "moe/imbalance/layer_10"])],
        ),
        ("time_per_phase", [("Seconds per phase", ["time/rollout", "time/learn"])]),
    ]


def test_malformed_definitions_are_named():
    with pytest.raises(PanelError, match="'X': give either metrics or a pattern"):
        Panel("X")
    with pytest.raises(PanelError, match="'X': give either"):
        Panel("X", ("a",), pattern="^a$")
    with pytest.raises(PanelError, match=r"must be \^\.\.\.\$"):
        Panel("X", pattern="critic/.+")
    with pytest.raises(PanelError, match="bad pattern"):
        Panel("X", pattern="^(critic$")
    with pytest.raises(PanelError, match="repeated: \\['A'\\]"):
        Section("s", "S", (Panel("A", ("a",)), Panel("A", ("b",))))
    with pytest.raises(PanelError, match="not a lowercase name"):
        Section("Bad Key", "S", ())


@pytest.mark.parametrize(
    "text, target",
    [
        ("me/proj", Target("me", "proj")),
        ("me/proj/ab12cd", Target("me", "proj", "ab12cd")),
        ("me/proj/runs/ab12cd", Target("me", "proj", "ab12cd")),
        ("https://wandb.ai/me/proj/runs/ab12cd?nw=x#y", Target("me", "proj", "ab12cd")),
        ("https://wandb.ai/me/my-proj.v2/workspace", Target("me", "my-proj.v2")),
        ("http://wandb.example.org/team_1/proj/", Target("team_1", "proj")),
    ],
)
def test_parse_target(text, target):
    assert parse_target(text) == target


@pytest.mark.parametrize(
    "text",
    ["proj", "", "me/proj/runs", "a/b/c/d", "me/pr oj", "ftp://wandb.ai/me/proj", "https:///me/p"],
)
def test_malformed_target_is_an_error(text):
    with pytest.raises(DashboardError, match="expected ENTITY/PROJECT"):
        parse_target(text)


def _panels(spec: dict) -> dict[str, list[dict]]:
    """{section name: its panels' configs} of a view spec."""
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: [p["config"] for p in s["panels"]] for s in sections}


def test_workspace_spec_holds_the_definition():
    spec = view_spec(build_workspace(Target("me", "proj"), "dash"))
    assert (spec["entityName"], spec["projectName"], spec["displayName"]) == ("me", "proj", "dash")
    panels = _panels(spec)
    assert list(panels) == [s.title for s in SECTIONS]
    for section in SECTIONS:
        configs = panels[section.title]
        assert [c["chartTitle"] for c in configs] == [p.title for p in section.panels]
        for panel, config in zip(section.panels, configs, strict=True):
            assert config["xAxis"] == "_step"
            if panel.pattern is None:
                assert config["metrics"] == list(panel.metrics)
                assert "useMetricRegex" not in config
            else:
                assert (config["metricRegex"], config["useMetricRegex"]) == (panel.pattern, True)
    critic = {c["chartTitle"]: c for c in panels["Critic health"]}
    assert critic["Agreement with verifiers per aspect"]["metricRegex"] == (
        "^critic/verifier_agreement/.+$"
    )
    assert critic["Position consistency"]["metrics"] == ["critic/position_consistency"]
    runset = spec["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == []
    assert spec["spec"]["section"]["settings"]["shouldAutoGeneratePanels"] is False


def test_a_run_filters_the_run_set():
    spec = view_spec(build_workspace(Target("me", "proj", "ab12cd")))
    (only,) = spec["spec"]["section"]["runSets"][0]["filters"]["filters"]
    assert (only["key"], only["op"], only["value"]) == (
        {"section": "run", "name": "name"},  # the run's id
        "=",
        "ab12cd",
    )


def test_command_dry_run_and_errors(capsys):
    assert dashboard.main(["https://wandb.ai/me/proj/runs/ab12cd", "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["displayName"] == "selfcritic ab12cd"
    assert list(_panels(spec)) == [s.title for s in SECTIONS]

    assert dashboard.main(["proj"]) == 2
    assert "'proj': expected ENTITY/PROJECT" in capsys.readouterr().err


def test_command_saves(monkeypatch, capsys):
    import wandb_workspaces.workspaces as ws

    saved = []
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self) or self)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: "https://wandb.ai/me/proj"))
    assert dashboard.main(["me/proj", "--name", "mine"]) == 0
    assert [(w.entity, w.project, w.name) for w in saved] == [("me", "proj", "mine")]
    assert capsys.readouterr().out.strip() == "https://wandb.ai/me/proj"

    def refuse(self):
        raise RuntimeError("not logged in")

    monkeypatch.setattr(ws.Workspace, "save", refuse)
    assert dashboard.main(["me/proj"]) == 1
    assert "could not save the workspace to me/proj: RuntimeError: not logged in" in (
        capsys.readouterr().err
    )
