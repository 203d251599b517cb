"""`python -m selfcritic.critic`: judging files with the real nano model through vLLM."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "selfcritic.critic", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_prints_every_verdict_and_the_scores(tmp_path, nano_model_path):
    (tmp_path / "prompt.txt").write_text("Q: 3+4=\nA:")
    names = []
    for name, text in (("right.txt", " 7"), ("wrong.txt", " 8"), ("praise.txt", " Great! 7")):
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    result = run_cli(
        "--model",
        str(nano_model_path),
        "--rubric",
        "nano",
        "--prompt-file",
        str(tmp_path / "prompt.txt"),
        *names,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout holds only the JSON
    assert report["rubric"] == "nano" and report["verdict_mode"] == "probability"
    pairs = {(p["first"], p["second"], p["aspect"]) for p in report["pairs"]}
    expected = {
        (names[i], names[j], aspect)
        for i in range(3)
        for j in range(i + 1, 3)
        for aspect in ("correct", "no_praise")
    }
    assert pairs == expected
    for pair in report["pairs"]:  # both orders, as the first response's win probability
        shown_x, shown_y = pair["p_first_wins_shown_as_X"], pair["p_first_wins_shown_as_Y"]
        assert 0 <= shown_x <= 1 and 0 <= shown_y <= 1
        assert abs(pair["outcome_for_first"] - (shown_x + shown_y) / 2) < 1e-9
    assert set(report["scores"]) == set(names)
    assert abs(sum(report["scores"].values())) < 1e-9
    assert report["metrics"]["critic/judgements"] == 6


def test_cli_refuses_bad_input_clearly(tmp_path, nano_model_path):
    (tmp_path / "prompt.txt").write_text("q")
    (tmp_path / "one.txt").write_text("a")
    base = ["--model", str(nano_model_path), "--prompt-file", str(tmp_path / "prompt.txt")]
    one = run_cli(*base, str(tmp_path / "one.txt"))
    assert one.returncode != 0 and "at least two RESPONSE_FILEs" in one.stderr
    missing = run_cli(*base, str(tmp_path / "one.txt"), str(tmp_path / "nope.txt"))
    assert missing.returncode != 0 and "no such file" in missing.stderr
    rubric = run_cli(
        *base, "--rubric", "nope", str(tmp_path / "one.txt"), str(tmp_path / "one.txt")
    )
    assert rubric.returncode != 0 and "unknown rubric 'nope'" in rubric.stderr


def test_cli_sets_the_delimiters_and_the_invalid_pair_rule():
    from selfcritic.critic.__main__ import parse_args

    base = ["--model", "m", "--prompt-file", "p", "a", "b"]
    args = parse_args([*base, "--delimiter", "<<", "--delimiter", ">>", "--invalid-pairs", "tie"])
    assert args.delimiters == ["<<", ">>"] and args.invalid_pairs == "tie"
    assert parse_args(base).delimiters is None  # the config's default ("->") then applies
