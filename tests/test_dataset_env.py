"""`env=dataset`: the user's own data file as an environment (selfcritic/envs/dataset.py).

Reading every format, the held-out split three ways, the epoch walk that resume depends on, each
kind of bad data refused before any work with its file, row and column named, and a user's
20-row jsonl trained for 2 steps and evaluated, as the README's command does it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from cli_runs import evaluate_checkpoint, read_jsonl, run_module, train_two_steps
from hydra import compose, initialize_config_dir

from selfcritic.config import Config, ConfigError
from selfcritic.envs.dataset import DatasetEnvironment, split_by_hash
from selfcritic.envs.registry import build_environment
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config

ROWS = [{"question": f"What is {a}+{a + 1}?", "answer": 2 * a + 1} for a in range(20)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def env_of(**options) -> DatasetEnvironment:
    defaults = {"name": "dataset", "prompt_key": "question", "reference_key": "answer"}
    return build_environment(defaults | options, Config())


def test_every_format_reads_the_same_prompts(tmp_path):
    import datasets

    table = datasets.Dataset.from_list(ROWS)
    files = {
        "jsonl": write_jsonl(tmp_path / "q.jsonl", ROWS),
        "json": str(tmp_path / "q.json"),
        "csv": str(tmp_path / "q.csv"),
        "parquet": str(tmp_path / "q.parquet"),
        "saved": str(tmp_path / "saved"),
    }
    (tmp_path / "q.json").write_text(json.dumps(ROWS))
    table.to_csv(files["csv"], index=False)
    table.to_parquet(files["parquet"])
    table.save_to_disk(files["saved"])
    expected = [(r["question"], str(r["answer"])) for r in ROWS]
    for kind, path in files.items():
        env = env_of(path=path, heldout_fraction=0.0)
        assert [(p.text, p.reference) for p in env.train] == expected, kind


def test_columns_map_onto_prompts(tmp_path):
    rows = [{"q": "Say hi", "a": None, "rubric": "k2_core", "budget": 12}]
    env = env_of(
        path=write_jsonl(tmp_path / "r.jsonl", rows),
        prompt_key="q",
        reference_key="a",
        rubric_key="rubric",
        budget_key="budget",
        prompt_template="Q: {prompt}\nA:",
        heldout_fraction=0.0,
    )
    (prompt,) = env.train
    assert prompt.text == "Q: Say hi\nA:" and prompt.reference is None  # rubric only
    assert prompt.rubric == "k2_core" and prompt.token_budget == 12


def test_the_walk_sees_every_row_once_per_epoch_and_is_pure(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", ROWS)
    env = env_of(path=path, heldout_fraction=0.0)
    epoch = [p.text for step in range(5) for p in env.prompts(step, 0, 4)]  # 20 rows
    assert Counter(epoch) == Counter(r["question"] for r in ROWS)
    again = env_of(path=path, heldout_fraction=0.0)  # a resumed run builds it afresh
    assert [p.text for p in again.prompts(3, 0, 4)] == epoch[12:16]
    assert [p.text for p in again.prompts(7, 0, 4)] == [p.text for p in env.prompts(7, 0, 4)]
    assert env.prompts(5, 0, 20) != env.prompts(0, 0, 20)  # the next epoch is reshuffled
    refill = env.prompts(2, 1, 3)
    assert len(refill) == 3 and refill == again.prompts(2, 1, 3)


def test_three_ways_to_hold_out(tmp_path):
    import datasets

    path = write_jsonl(tmp_path / "q.jsonl", ROWS)
    hashed = env_of(path=path, heldout_fraction=0.3)
    train, heldout = split_by_hash(hashed.train + hashed.heldout, 0.3)
    assert {p.text for p in train} == {p.text for p in hashed.train}  # order-independent
    assert 0 < len(hashed.heldout) < 20 and len(hashed.train) + len(hashed.heldout) == 20
    assert not {p.text for p in hashed.train} & {p.text for p in hashed.heldout}
    other = write_jsonl(tmp_path / "test.jsonl", ROWS[:3])
    by_file = env_of(path=path, heldout_path=other)
    assert len(by_file.train) == 20 and [p.text for p in by_file.held_out()] == [
        r["question"] for r in ROWS[:3]
    ]
    saved = tmp_path / "dict"
    datasets.DatasetDict(
        train=datasets.Dataset.from_list(ROWS[3:]), test=datasets.Dataset.from_list(ROWS[:3])
    ).save_to_disk(str(saved))
    by_split = env_of(path=str(saved), heldout_split="test")
    assert len(by_split.train) == 17 and len(by_split.held_out()) == 3
    assert len(env_of(path=path, heldout_fraction=0.5, heldout_max=2).held_out()) == 2
    assert len(env_of(path=path, heldout_fraction=0.0, max_rows=5).train) == 5


def _compose(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def refusal(path, *overrides: str) -> str:
    """What the preflight says of a run on `path` (it must refuse)."""
    cfg = _compose(
        "env=dataset",
        f"env.path={path}",
        "env.prompt_key=question",
        "env.reference_key=answer",
        *overrides,
    )
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    return str(caught.value)


def test_a_missing_file_or_an_unknown_format(tmp_path):
    assert "data file" in refusal(tmp_path / "nowhere.jsonl") and "does not exist" in refusal(
        tmp_path / "nowhere.jsonl"
    )
    (tmp_path / "q.txt").write_text("hello\n")
    assert "unknown format '.txt'" in refusal(tmp_path / "q.txt")


def test_an_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    message = refusal(tmp_path / "empty.jsonl")
    assert message.startswith("config key 'env.path'") and "empty.jsonl holds no rows" in message


def test_a_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "x", "answer": 1}])
    message = refusal(path)
    assert message.startswith("config key 'env.prompt_key'")
    assert f"{path} has no column 'question'" in message and "['prompt', 'answer']" in message


def test_a_row_without_a_prompt(tmp_path):
    rows = [*ROWS[:6], {"question": "", "answer": 3}, *ROWS[6:]]
    message = refusal(write_jsonl(tmp_path / "q.jsonl", rows))
    assert "q.jsonl, row 7: column 'question' is empty" in message
    rows = [*ROWS[:2], {"answer": 3}]
    assert "row 3: column 'question' is empty" in refusal(write_jsonl(tmp_path / "r.jsonl", rows))


def test_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "q.jsonl"
    write_jsonl(path, ROWS[:3])
    with path.open("ab") as handle:
        handle.write(b'{"question": "caf\xe9", "answer": 1}\n')
    message = refusal(path)
    assert "q.jsonl, line 4: not UTF-8 text (byte 0xe9 at column 18)" in message


def test_a_bad_budget_and_a_missing_split(tmp_path):
    rows = [{"question": "x", "answer": 1, "budget": -3}]
    path = write_jsonl(tmp_path / "q.jsonl", rows)
    assert "row 1: column 'budget' must be a whole number" in refusal(path, "env.budget_key=budget")
    import datasets

    datasets.DatasetDict(train=datasets.Dataset.from_list(ROWS)).save_to_disk(str(tmp_path / "d"))
    message = refusal(tmp_path / "d", "env.heldout_split=test")
    assert message.startswith("config key 'env.split'") and "its splits: ['train']" in message


def test_a_users_jsonl_trains_two_steps_and_evaluates(tmp_path, cache_dir):
    """The README's command from the user's own directory: 2 steps with evaluations of the
    held-out share, then the evaluation CLI on the checkpoint."""
    data = write_jsonl(tmp_path / "questions.jsonl", ROWS)
    out = tmp_path / "run"
    run_module(
        "selfcritic.run",
        "+experiment=nano_quick",
        "env=dataset",
        f"env.path={data}",
        "env.prompt_key=question",
        "env.reference_key=answer",
        "env.heldout_fraction=0.25",
        "reward.verifier=exact_number",
        "trainer.steps=2",
        "eval.every=2",
        "eval.samples=2",
        "data.prompts_per_step=4",
        "sampling.max_tokens=4",
        f"trainer.output_dir={out}",
        f"trainer.cache_dir={cache_dir}",
        "tracking.wandb_mode=disabled",
        "tracking.samples_every=1",
        cwd=tmp_path,
    )
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and record["critic/judgements"] > 0
    questions = {r["question"] for r in ROWS}
    samples = read_jsonl(out / "samples.jsonl")
    assert samples and {s["prompt"] for s in samples} <= questions
    metrics, _ = evaluate_checkpoint(out / "checkpoint", tmp_path, "eval.samples=2")
    assert 0 <= metrics["eval/verifier_mean"] <= 1 and metrics["eval/verifier_failed"] == 0
    # the critic on the model's own held-out (correct, wrong) pairs: none where all are wrong
    assert metrics["eval/critic_pairs"] >= 0 and "eval/critic_agreement" in metrics


@pytest.mark.slow  # the cut itself: test_critic.py's cut tests, in the default suite
def test_long_prompts_train_with_critic_prompts_cut_and_counted(tmp_path, cache_dir):
    """GSM8K-length questions (177 characters, about as many tokens) with 64-token answers in
    the nano model's 256-token context: each prompt and its answer fit, a critic prompt with two
    answers does not, so its responses are cut to fit and counted (critic/cut_prompts), never a
    failed step (the length rule of docs/running.md)."""
    rows = [
        {
            "question": f"Natalia sold clips to {a} of her friends in April, and then she sold half"
            " as many clips in May. How many clips did Natalia sell altogether in April and May?"
            " Answer with a number.",
            "answer": a + a // 2,
        }
        for a in range(40, 60)
    ]
    assert {len(row["question"]) for row in rows} == {177}
    records = train_two_steps(
        tmp_path / "run",
        cache_dir,
        "env=dataset",
        f"env.path={write_jsonl(tmp_path / 'long.jsonl', rows)}",
        "env.prompt_key=question",
        "env.reference_key=answer",
        "reward.verifier=exact_number",
        "sampling.max_tokens=64",
        "data.prompts_per_step=4",
        "eval.samples=1",
    )
    for record in records[1:]:
        assert record["critic/cut_prompts"] > 0 and record["critic/judgements"] > 0
        assert record["critic/skipped_too_long"] == 0  # the questions fit: answers are cut
        assert record["reward/verifier_failed"] == 0 and record["critic/invalid_rate"] < 1


def test_dropping_prompts_voids_a_walk_drawn_before(tmp_path):
    """A walk drawn over all the rows (the run-start warning draws step 1) is drawn again over
    the rows kept: no index past them, the same prompts as never having drawn."""
    data = write_jsonl(tmp_path / "q.jsonl", ROWS)
    drawn, fresh = (env_of(path=data, heldout_fraction=0.0) for _ in range(2))
    drawn.prompts(1, 0, 4)
    for env in (drawn, fresh):
        env.keep_prompts(lambda p: int(p.reference) % 3 != 0)
    assert drawn.prompts(0, 0, 12) == fresh.prompts(0, 0, 12)


def _long_row_settings(tmp_path) -> list[str]:
    """A data file whose third row (300 characters) cannot fit the context with
    sampling.max_tokens."""
    rows = [*ROWS[:2], {"question": "Why? " * 60, "answer": 1}, *ROWS[2:]]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    settings = ["env=dataset", f"env.path={data}", "env.prompt_key=question"]
    settings += ["env.reference_key=answer", "reward.verifier=exact_number"]
    return settings + ["env.heldout_fraction=0.25", "data.prompts_per_step=2"]


def test_prompts_too_long_for_the_context_are_refused(tmp_path, cache_dir):
    """A row that cannot fit the context is refused before any work (the first step's prompts
    alone would not show it)."""
    settings = _long_row_settings(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "selfcritic.run", "+experiment=nano_quick", *settings,
         "trainer.steps=1", f"trainer.output_dir={tmp_path / 'refused'}",
         f"trainer.cache_dir={cache_dir}",
         "tracking.wandb_mode=disabled"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0
    assert "config key 'data.long_prompts': 1 prompts of 'dataset'" in done.stderr
    assert "(301 tokens) begins 'Why? Why?" in done.stderr  # BOS and 300 characters
    assert not (tmp_path / "refused" / "metrics.jsonl").exists()


@pytest.mark.slow  # a 2-step run; what is kept: test_dropping_prompts_voids_a_walk_drawn_before
def test_prompts_too_long_for_the_context_are_dropped(tmp_path, cache_dir):
    """With data.long_prompts=drop the row is left out and the run trains."""
    settings = _long_row_settings(tmp_path)
    # with a reasoning block to strip that the random model never closes: every answer has
    # no final part, so the verifier sees "" and scores 0
    reasoning = "env.reasoning_tags=['<think>','</think>']"
    records = train_two_steps(
        tmp_path / "dropped", cache_dir, *settings, "data.long_prompts=drop", reasoning
    )
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and record["reward/no_final_answer"] == 1
        assert record["reward/verifiable_mean"] == 0
    assert records[-1]["eval/no_final_answer"] == 1
