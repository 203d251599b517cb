"""`python -m selfcritic.plot RUN_DIR`: PNG curves per dashboard section from a metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfcritic.plot import PlotError, collect_series, figures, legend_labels, read_metrics, render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir, truncated: bool = True):
    """Five steps as the Tracker writes them (NaN included), then a line cut mid-write."""
    lines = []
    for step in range(1, 6):
        record = {
            "step": step,
            "reward/mean": 0.1 * step,
            "reward/verifiable_mean": float("nan") if step == 3 else 0.2 * step,
            "critic/agreement": float("nan"),  # never measured: left out
            "critic/position_consistency": 0.5,
            "critic/verifier_agreement/no_praise": 0.6,
            "critic/verifier_agreement/correct": 0.7,
            "learner/loss": 1.0 / step,
            "muonclip/max_logit/layer_0": 2.0 * step,
            "muonclip/max_logit/layer_1": 3.0 * step,
            "time/rollout": 0.3,
            "weight_version": step,
        }
        lines.append(json.dumps(record))  # json writes NaN as NaN, as the Tracker does
    text = "\n".join(lines) + "\n"
    if truncated:
        text += '{"step": 6, "reward/mean": 0.'
    (run_dir / "metrics.jsonl").write_text(text)


def test_figures_follow_the_dashboard():
    names = [
        "time/rollout",
        "step",
        "reward/mean",
        "zeta/x",
        "critic/verifier_agreement/no_praise",
        "critic/verifier_agreement/correct",
        "weight_version",
        "learner/loss",
        "moe/imbalance/layer_10",
        "moe/imbalance/layer_2",
        "muonclip/w/layer_1",
        "muonclip/w/layer_0",
        "env/sums/reward_mean",
        "env/echo/reward_mean",
        "alpha/y",
    ]
    assert figures(names) == [
        (
            "rewards",
            "Rewards",
            [
                ("Reward", ["reward/mean"]),
                ("Reward per environment", ["env/echo/reward_mean", "env/sums/reward_mean"]),
            ],
        ),
        (
            "critic_health",
            "Critic health",
            [
                (
                    "Agreement with verifiers per aspect",
                    ["critic/verifier_agreement/correct", "critic/verifier_agreement/no_praise"],
                )
            ],
        ),
        ("policy_health", "Policy health", [("Loss", ["learner/loss"])]),
        (
            "optimizer",
            "Optimizer",
            [("MoE router imbalance", ["moe/imbalance/layer_2", "moe/imbalance/layer_10"])],
        ),
        ("time_per_phase", "Time per phase", [("Seconds per phase", ["time/rollout"])]),
        (  # what no panel covers, as before: one plot per metric, layers together
            "other",
            "other metrics",
            [
                ("alpha/y", ["alpha/y"]),
                ("muonclip/w/layer_*", ["muonclip/w/layer_0", "muonclip/w/layer_1"]),
                ("weight_version", ["weight_version"]),
                ("zeta/x", ["zeta/x"]),
            ],
        ),
    ]
    assert figures(["weight_version"]) == [
        ("other", "other metrics", [("weight_version", ["weight_version"])])
    ]


def test_legend_labels():
    assert legend_labels(["critic/decisive/correct", "critic/decisive/no_praise"]) == [
        "correct",
        "no_praise",
    ]
    assert legend_labels(["env/a/reward_mean", "env/b/reward_mean"]) == [
        "a/reward_mean",
        "b/reward_mean",
    ]
    assert legend_labels(["eval/critic_agreement_correct", "eval/critic_agreement_style"]) == [
        "correct",
        "style",
    ]
    assert legend_labels(["learner/clip_fraction", "learner/clip_fraction_epoch_1"]) == [
        "clip_fraction",
        "clip_fraction_epoch_1",
    ]
    assert legend_labels(["reward/mean"]) == ["reward/mean"]


def test_series_skip_nan_and_truncated_line(tmp_path):
    write_metrics(tmp_path)
    records, warnings = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert len(warnings) == 1 and "metrics.jsonl:6" in warnings[0]
    series = collect_series(records)
    assert "critic/agreement" not in series  # all NaN
    assert series["reward/verifiable_mean"][0] == [1.0, 2.0, 4.0, 5.0]  # the NaN point skipped
    assert series["reward/mean"][1] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_render_writes_a_png_per_section(tmp_path, capsys):
    import matplotlib.image

    write_metrics(tmp_path)
    written = render(tmp_path)
    assert [p.name for p in written] == [  # no Evaluation section: no eval/ metric logged
        "rewards.png",
        "critic_health.png",
        "policy_health.png",
        "optimizer.png",
        "time_per_phase.png",
        "other.png",  # weight_version
    ]
    for path in written:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert "cut short" in capsys.readouterr().err


def test_render_keys_and_out(tmp_path):
    write_metrics(tmp_path, truncated=False)
    written = render(tmp_path, tmp_path / "elsewhere", ["reward/mean", "learner"])
    assert [p.name for p in written] == ["rewards.png", "policy_health.png"]
    assert all(p.parent == tmp_path / "elsewhere" for p in written)
    with pytest.raises(PlotError, match="no metric matching nothing"):
        render(tmp_path, prefixes=["nothing"])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(PlotError, match="metrics.jsonl: no such file"):
        read_metrics(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PlotError, match="empty"):
        read_metrics(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(PlotError, match="metrics.jsonl:2: not a JSON line"):
        read_metrics(tmp_path / "metrics.jsonl")
    (tmp_path / "metrics.jsonl").write_text('{"reward/mean": 1}\n{"step": 2}\n')
    with pytest.raises(PlotError, match="metrics.jsonl:1: .*step"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_command_line(tmp_path):
    write_metrics(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "selfcritic.plot", str(tmp_path), "--keys", "reward"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "plots" / "rewards.png")]
    assert "warning" in result.stderr

    missing = subprocess.run(
        [sys.executable, "-m", "selfcritic.plot", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert str(tmp_path / "nope" / "metrics.jsonl") in missing.stderr
