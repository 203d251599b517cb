"""`python -m selfcritic.critic check-rubric`: the per-aspect statistics on verdicts worked out by
hand, the command on a hand-labelled probe file with the real nano model through vLLM, bad probe
files, and the run-start warning naming aspects no probe covers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from rewards.base import Rubric, RubricAspect
from selfcritic.config import CalibrationConfig, CriticConfig, GateConfig
from selfcritic.critic.check_rubric import (
    aspect_checks,
    check_report,
    gate_status,
    rubric_jobs,
    table_rows,
)
from selfcritic.critic.gate import (
    probe_key,
    read_jsonl_probes,
    unchecked_aspects,
    unchecked_warning,
)
from selfcritic.critic.judge import Judged, PairJob
from selfcritic.rollout.types import Sample

ANSWER = Sample((), (), "", (), "stop", 0)


def _judged(aspect: str, forward, backward, index: int = 0, tie: bool = False) -> Judged:
    """A probe (better first) judged P(X wins) = `forward` with the better one as X and
    `backward` with it as Y (None: invalid)."""
    job = PairJob(probe_key(aspect, index, tie), "q", "better", "worse", aspect, "probe's words")
    return Judged(job, forward, backward, ANSWER, ANSWER)


# By hand, "brief" (labelled pairs, better first):
#   0.9 / 0.2: outcome (0.9 + 0.8) / 2 = 0.85, the better won: 1; X then Y chosen: consistent
#   0.8 / 0.7: outcome (0.8 + 0.3) / 2 = 0.55: 1; X in both orders: the position won, flipped
#   0.3 / 0.6: outcome (0.3 + 0.4) / 2 = 0.35: 0; the worse won in both orders: consistent
#   None / 0.4: invalid forward, a tie: 0.5; not counted for consistency
# agreement (1 + 1 + 0 + 0.5) / 4 = 0.625; consistency 2 of 3 valid pairs; the tie probe
# 0.6 / 0.6 has outcome (0.6 + 0.4) / 2 = 0.5: tie agreement 1 - 2 |0.5 - 0.5| = 1;
# invalid: 1 verdict of 2 x 5 = 0.1. "polite": one pair with no verdict at all.
HAND = [
    _judged("brief", 0.9, 0.2, 0),
    _judged("brief", 0.8, 0.7, 1),
    _judged("brief", 0.3, 0.6, 2),
    _judged("brief", None, 0.4, 3),
    _judged("brief", 0.6, 0.6, 0, tie=True),
    _judged("polite", None, None, 0),
]


def test_aspect_statistics_on_verdicts_worked_out_by_hand():
    checks = aspect_checks(HAND)
    brief, polite = checks["brief"], checks["polite"]
    assert (brief.pairs, brief.tie_pairs) == (4, 1)
    assert brief.agreement == pytest.approx(0.625)
    assert brief.position_consistency == pytest.approx(2 / 3)
    assert brief.invalid_rate == pytest.approx(0.1)
    assert brief.tie_agreement == pytest.approx(1.0)
    assert (polite.pairs, polite.agreement, polite.invalid_rate) == (1, 0.5, 1.0)
    assert math.isnan(polite.position_consistency) and math.isnan(polite.tie_agreement)


def test_gate_ruling_follows_the_threshold_and_names_unprobed_aspects():
    assert gate_status("brief", HAND, 0.65) == "closed"  # 0.625 < 0.65
    assert gate_status("brief", HAND, 0.6) == "open"  # and the tie agreement 1 >= 0.6
    assert gate_status("polite", HAND, 0.5) == "open"  # 0.5 >= 0.5
    assert gate_status("never_probed", HAND, 0.5) == "unchecked"
    ties_broken = [_judged("brief", 1.0, 0.0), _judged("brief", 0.9, 0.1, tie=True)]
    # right on the labelled pair (1), but the tie probe's outcome 0.9 is 1 - 2 * 0.4 = 0.2
    assert gate_status("brief", ties_broken, 0.65) == "closed"


RUBRIC = Rubric(
    "hand",
    (
        RubricAspect("brief", "no needless words", 1.0, mandatory=True),
        RubricAspect("polite", "courteous", 0.5),
        RubricAspect("sourced", "cites its sources", 0.5),
    ),
)


def test_probes_take_the_rubrics_wording_and_other_aspects_are_left_aside():
    probes = [
        HAND[0].job,
        _judged("elsewhere", 1, 1).job,
        HAND[5].job,
        _judged("elsewhere", 1, 1).job,
    ]
    jobs, ignored = rubric_jobs(RUBRIC, probes)
    assert [(job.aspect, job.description) for job in jobs] == [
        ("brief", "no needless words"),
        ("polite", "courteous"),
    ]
    assert ignored == ["elsewhere"]


def test_report_lists_every_aspect_in_rubric_order_with_unchecked_ones():
    report = check_report(RUBRIC, HAND, ("X", "Y"), 0.65)
    rows = {row["aspect"]: row for row in report["aspects"]}
    assert [row["aspect"] for row in report["aspects"]] == ["brief", "polite", "sourced"]
    assert report["unchecked"] == ["sourced"]
    assert rows["sourced"] == {
        "aspect": "sourced",
        "mandatory": False,
        "weight": 0.5,
        "pairs": 0,
        "tie_pairs": 0,
        "gate": "unchecked",
    }
    assert rows["polite"]["position_consistency"] is None  # NaN is not JSON
    assert rows["brief"]["agreement"] == pytest.approx(0.625) and rows["brief"]["gate"] == "closed"
    first = report["pairs"][0]
    assert first["p_better_wins_shown_as_X"] == 0.9
    assert first["p_better_wins_shown_as_Y"] == pytest.approx(0.8)  # 1 - P(X) with better as Y
    assert first["outcome_for_better"] == pytest.approx(0.85)
    json.dumps(report, allow_nan=False)  # valid JSON throughout
    header, cells = table_rows(report)
    assert header[-3:] == ("tie pairs", "tie agreement", "gate")
    assert cells[0] == ("brief", "yes", "4", "0.625", "0.667", "0.100", "1", "1.000", "closed")
    assert cells[2] == ("sourced", "no", "0", "-", "-", "-", "0", "-", "unchecked")


# ---------------------------------------------------------------- the run-start warning


def test_unchecked_aspects_are_those_no_probe_covers_but_the_calibrated_one():
    probes = [HAND[5].job, _judged("sourced", 1, 1, tie=True).job]  # polite; sourced: ties only
    aspects = ["correct", "brief", "polite", "sourced", "brief"]
    assert unchecked_aspects(aspects, probes, calibrated="correct") == ["brief"]
    assert unchecked_aspects(aspects, probes) == ["correct", "brief"]
    assert unchecked_aspects(["polite"], probes) == []


def test_the_warning_names_the_unchecked_aspects_and_the_source():
    probes = [HAND[5].job]
    cfg = CriticConfig(gate=GateConfig(source="probes.jsonl"))
    warning = unchecked_warning(["correct", "brief", "polite"], probes, cfg)
    assert "aspect(s) brief have no probe pairs" in warning  # correct: the verifier calibrates
    assert "critic.gate.source=probes.jsonl" in warning and "check-rubric" in warning
    uncalibrated = CriticConfig(calibration=CalibrationConfig(enabled=False))
    assert "aspect(s) correct, brief have" in unchecked_warning(
        ["correct", "brief", "polite"], probes, uncalibrated
    )
    assert unchecked_warning(["correct", "polite"], probes, cfg) is None


# ---------------------------------------------------------------- bad probe files

GOOD = {"question": "q", "better": "a", "worse": "b", "aspect": "brief", "description": "d"}


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ({"tie": "yes"}, r"probes.jsonl:2: field tie must be true or false"),
        ({"tei": True}, r"probes.jsonl:2 has unknown field\(s\) tei"),
        ({"aspect": " "}, r"probes.jsonl:2: field aspect is empty"),
        ({"worse": None}, r"probes.jsonl:2 needs string fields .*; missing or not a string: worse"),
    ],
)
def test_a_bad_probe_line_is_named_with_its_field(tmp_path, row, named):
    path = tmp_path / "probes.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD | row) + "\n")
    with pytest.raises(ValueError, match=named):
        read_jsonl_probes(path, per_aspect=1)  # a line past the count is checked too


def run_cli(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "selfcritic.critic", "check-rubric", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_probe_file_fails_before_any_model_loads(tmp_path):
    path = tmp_path / "probes.jsonl"
    no_aspect = {k: v for k, v in GOOD.items() if k != "aspect"}
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(no_aspect) + "\n")
    missing = run_cli("nano", "--model", str(tmp_path / "no_model"), "--probes", str(path))
    assert missing.returncode != 0 and missing.stdout == ""
    assert f"error: --probes: {path}:2 needs string fields" in missing.stderr
    assert "missing or not a string: aspect" in missing.stderr
    path.write_text(json.dumps(GOOD) + "\n\n{not json\n")
    broken = run_cli("nano", "--model", str(tmp_path / "no_model"), "--probes", str(path))
    assert broken.returncode != 0 and f"{path}:3 is not JSON" in broken.stderr
    nowhere = run_cli("nano", "--model", "m")
    assert nowhere.returncode == 2 and "give --env NAME, --probes FILE.jsonl" in nowhere.stderr


# ---------------------------------------------------------------- the command, real model

# Hand-labelled pairs on four aspects (3 each; one tie pair on no_praise), better first
QUESTION = "Q: 3+4=\nA:"
PAIRS = {
    "correct": [(" 7", " 8"), (" 7", " 9"), (" 7 it is", " 6")],
    "no_praise": [(" 7", " Great! 7"), (" 7", " Nice question! 7"), (" 7", " Wow! 7")],
    "no_filler": [(" 7", " 7 la la"), (" 7", " 7 you know"), (" 7", " 7 and so on")],
    "no_meta": [(" 7", " I think 7"), (" 7", " Let me see, 7"), (" 7", " My answer: 7")],
}


def _write_probes(path):
    rows = [
        {"question": QUESTION, "better": b, "worse": w, "aspect": a, "description": "probe's"}
        for a, pairs in PAIRS.items()
        for b, w in pairs
    ]
    rows.append(
        GOOD
        | {"question": QUESTION, "better": " 7", "worse": " 7", "aspect": "no_praise"}
        | {"tie": True}
    )
    rows.append(GOOD | {"aspect": "not_in_rubric"})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")


def _verdicts(pair: dict) -> tuple[float | None, float | None]:
    return pair["p_better_wins_shown_as_X"], pair["p_better_wins_shown_as_Y"]


def _outcome(pair: dict) -> float:
    x, y = _verdicts(pair)
    return 0.5 if x is None or y is None else (x + y) / 2


def _expected(pairs: list[dict]) -> dict:
    """Per aspect, worked out from the per-pair verdicts alone: agreement, consistency (the
    better one won in both orders or lost in both), invalid rate, tie agreement."""
    found = {}
    for aspect in {p["aspect"] for p in pairs}:
        mine = [p for p in pairs if p["aspect"] == aspect]
        labelled = [p for p in mine if not p["tie"]]
        outcomes = [_outcome(p) for p in labelled]
        valid = [_verdicts(p) for p in labelled if None not in _verdicts(p)]
        tied = [_outcome(p) for p in mine if p["tie"]]
        found[aspect] = {
            "pairs": len(labelled),
            "agreement": sum(1 if o > 0.5 else 0.5 if o == 0.5 else 0 for o in outcomes)
            / len(outcomes),
            "position_consistency": sum((x > 0.5) == (y > 0.5) for x, y in valid) / len(valid),
            "invalid_rate": sum(_verdicts(p).count(None) for p in mine) / (2 * len(mine)),
            "tie_agreement": sum(1 - 2 * abs(o - 0.5) for o in tied) / len(tied) if tied else None,
        }
    return found


def test_check_rubric_prints_per_aspect_numbers_that_follow_from_its_verdicts(
    tmp_path, nano_model_path
):
    probes, rubric, out = tmp_path / "probes.jsonl", tmp_path / "five.yaml", tmp_path / "r.json"
    _write_probes(probes)
    aspects = [*PAIRS, "sourced"]
    rubric.write_text(
        "name: five\naspects:\n"
        + "".join(f"  - name: {a}\n    description: the {a} aspect\n" for a in aspects)
    )
    result = run_cli(
        str(rubric), "--model", str(nano_model_path), "--probes", str(probes),
        "--tie-pairs-per-aspect", "1", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["pairs"]) == 13 and report["ignored_probe_aspects"] == ["not_in_rubric"]
    assert {p["question"] for p in report["pairs"]} == {QUESTION}
    expected = _expected(report["pairs"])
    assert set(expected) == set(PAIRS)
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    for aspect, numbers in expected.items():
        row = next(r for r in report["aspects"] if r["aspect"] == aspect)
        printed = lines[aspect]  # aspect mandatory pairs agreement consistency invalid ties ...
        assert int(printed[2]) == numbers["pairs"] == row["pairs"] == 3
        for column, key in ((3, "agreement"), (4, "position_consistency"), (5, "invalid_rate")):
            assert row[key] == pytest.approx(numbers[key], abs=1e-12), (aspect, key)
            assert float(printed[column]) == pytest.approx(numbers[key], abs=5e-4), (aspect, key)
        if aspect == "no_praise":
            assert printed[6] == "1"
            assert float(printed[7]) == pytest.approx(numbers["tie_agreement"], abs=5e-4)
        measured = (numbers["agreement"], numbers["tie_agreement"])
        passes = all(value is None or value >= 0.65 for value in measured)
        assert printed[-1] == row["gate"] == ("open" if passes else "closed"), aspect
    assert lines["sourced"][-1] == "unchecked" and report["unchecked"] == ["sourced"]
    assert "unchecked (no probe pairs" in result.stdout and "sourced" in result.stdout


def test_k2_core_on_an_environment_without_its_probes_names_every_aspect_unchecked():
    result = run_cli("k2_core", "--env", "nano_arithmetic", "--model", "unused")  # no pair to judge
    assert result.returncode == 0, result.stderr[-3000:]
    aspects = ("clarity_relevance", "conversational_fluency", "objective_grounded")
    rows = [line.split() for line in result.stdout.splitlines()]
    rows = [row for row in rows if row and row[0] in aspects]
    assert [row[0] for row in rows] == list(aspects)
    assert all(row[2] == "0" and row[-1] == "unchecked" for row in rows)
    assert (
        f"their verdicts would reach the reward unchecked): {', '.join(aspects)}" in result.stdout
    )
    as_json = run_cli("k2_core", "--env", "nano_arithmetic", "--model", "unused", "--json")
    report = json.loads(as_json.stdout)  # stdout holds only the JSON
    assert report["unchecked"] == list(aspects) and report["pairs"] == []
    assert report["probe_sources"] == {"environment nano_arithmetic": 0}
