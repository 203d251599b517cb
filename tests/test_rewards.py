"""Verifiers, the safe wrapper, the registry and rubric files."""

from __future__ import annotations

import math

import pytest

from rewards import registry
from rewards.base import RewardResult
from rewards.exact import exact_number, last_number
from rewards.safe import safe_score


@pytest.mark.parametrize(
    ("completion", "reference", "score"),
    [
        (" 7", "7", 1.0),
        (" 7<eos>", "7", 1.0),
        (" 12 is it", "12", 1.0),
        (" 3 no, 4", "4", 1.0),  # the last number counts
        (" 4 no, 3", "4", 0.0),
        (" 07", "7", 1.0),
        (" -2", "-2", 1.0),
        (" 2", "-2", 0.0),
        (" 7.0", "7", 1.0),
        (" seven", "7", 0.0),
        ("", "7", 0.0),
        ("~~~}}{", "7", 0.0),
    ],
)
def test_exact_number(completion, reference, score):
    assert exact_number(completion, reference).score == score


def test_no_number_gives_reason():
    result = exact_number("nothing here", "3")
    assert result.score == 0.0
    assert "no number" in result.info["reason"]
    assert last_number("a 1 b 22 c") == 22.0


def test_safe_score_turns_crashes_and_nonsense_into_zero():
    def crashes(completion, reference):
        raise RuntimeError("boom")

    def nan_score(completion, reference):
        return RewardResult(math.nan)

    def too_big(completion, reference):
        return RewardResult(3.0)

    def wrong_type(completion, reference):
        return "yes"

    for verifier in (crashes, nan_score, too_big, wrong_type):
        result = safe_score(verifier, "x", "y")
        assert result.score == 0.0
        assert "error" in result.info
    assert "boom" in safe_score(crashes, "x", "y").info["error"]
    assert safe_score(exact_number, "5", "5").score == 1.0


def test_registry_finds_builtins_and_refuses_duplicates():
    assert {"exact_number", "exact_match"} <= set(registry.verifier_names())
    assert registry.get_verifier("exact_number") is exact_number
    with pytest.raises(ValueError, match="already registered"):
        registry.register_verifier("exact_number")(lambda c, r: RewardResult(1.0))
    with pytest.raises(KeyError, match="registered"):
        registry.get_verifier("no_such_verifier")


def test_rubrics_load_with_aspects():
    nano = registry.load_rubric("nano")
    assert [a.name for a in nano.aspects] == ["correct", "no_praise"]
    assert nano.aspects[0].mandatory and not nano.aspects[1].mandatory
    prescriptive = registry.load_rubric("k2_prescriptive")
    assert all(a.mandatory for a in prescriptive.aspects)
    assert {"nano", "k2_core", "k2_prescriptive"} <= set(registry.rubric_names())


def test_malformed_rubric_names_the_file(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("name: broken\naspects:\n  - weight: 1.0\n")
    monkeypatch.setattr(registry, "RUBRIC_DIR", tmp_path)
    with pytest.raises(ValueError, match="broken.yaml"):
        registry.load_rubric("broken")
