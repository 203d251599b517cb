"""Critic verdicts on answer-labelled pairs (selfcritic/envs/verdicts.py): the targets worked
out by hand, the labels, the probe split, and a dataset environment's corpus with them."""

from __future__ import annotations

import json
import random
import re

import pytest

from selfcritic.config import Config, CriticConfig
from selfcritic.envs.registry import build_environment
from selfcritic.envs.verdicts import (
    AnswerPair,
    answer_pair,
    answer_probes,
    is_probe,
    near_miss,
    split,
    worked_target,
)

XY = ("X", "Y")
QUESTIONS = [(f"What is {a} plus {a + 1}?", str(2 * a + 1)) for a in range(200)]


def test_worked_targets_by_hand():
    assert worked_target("19", [("18", False), ("19", True)], XY, "#") == " =19 X18- Y19+ #Y"
    assert worked_target("19", [("19", True), ("18", False)], XY, "#") == " =19 X19+ Y18- #X"
    # ties name the first shown, so that the two orders cancel
    assert worked_target("7", [("7", True), ("7", True)], XY, "#") == " =7 X7+ Y7+ #X"
    assert worked_target("7", [("6", False), ("9", False)], XY, "#") == " =7 X6- Y9- #X"
    pair = AnswerPair("Q", "19", "19", "18")
    assert pair.rights == (True, False)
    assert pair.target(False, XY, "#") == " =19 X19+ Y18- #X"
    assert pair.target(True, XY, "#") == " =19 X18- Y19+ #Y"


def test_near_misses_are_close_wrong_and_never_negative_from_zero():
    rng = random.Random(0)
    for answer in ("0", "3", "42", "-5"):
        misses = {near_miss(answer, rng) for _ in range(300)}
        values = {int(m) for m in misses}
        assert int(answer) not in values and all(abs(v - int(answer)) <= 9 for v in values)
        if int(answer) >= 0:
            assert min(values) >= 0
    assert {int(near_miss("0", rng)) for _ in range(300)} == set(range(1, 10))
    assert near_miss("4.5", rng) is None and near_miss("cat", rng) is None


def test_pairs_are_labelled_by_the_reference():
    rng = random.Random(1)
    others = ["cat", "dog", "emu"]
    for _ in range(100):
        pair = answer_pair("Q", "cat", others, tie=False, rng=rng)
        assert pair.rights == (True, False) and pair.second in ("dog", "emu")
        tie = answer_pair("Q", "12", others, tie=True, rng=rng)
        assert tie.rights in ((True, True), (False, False))
        if tie.rights == (False, False):
            assert tie.first != tie.second  # two different wrong answers
    with pytest.raises(ValueError, match="every reference is the same"):
        answer_pair("Q", "cat", ["cat"], tie=False, rng=rng)


def test_probes_are_labelled_and_on_questions_the_corpus_never_uses():
    jobs = answer_probes(QUESTIONS, CriticConfig(), "nano_math", per_aspect=24, ties=8, seed=0)
    assert {(job.aspect, job.description) for job in jobs} == {
        ("correct", "the answer states the right result")  # the rubric's words
    }
    assert len(jobs) == 32
    probe_questions = {q for q, _ in QUESTIONS if is_probe(q)}
    assert 20 < len(probe_questions) < 60  # PROBE_FRACTION 0.2 of 200
    assert {job.question for job in jobs} <= probe_questions
    assert not probe_questions & {q for q, _ in split(QUESTIONS, probe=False)}
    reference = dict(QUESTIONS)
    for job in jobs:
        right = (job.first == reference[job.question], job.second == reference[job.question])
        if job.key[0] == "probe":
            assert right == (True, False)  # the better one first
        else:
            assert job.key[0] == "tie_probe" and right[0] == right[1]
    assert jobs == answer_probes(QUESTIONS, CriticConfig(), "nano_math", 24, 8, seed=0)


def _dataset_env(tmp_path, **verdicts):
    rows = [{"question": f"What is {a}+{a + 1}?", "answer": 2 * a + 1} for a in range(60)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    options = {"name": "dataset", "path": str(data), "prompt_key": "question"}
    options |= {"reference_key": "answer", "prompt_template": "Q: {prompt}\nA:"}
    cfg = Config()
    cfg.critic.verdict_mode = "generative"
    return build_environment(options | {"verdicts": verdicts}, cfg)


def test_a_dataset_corpus_mixes_worked_verdicts_into_its_demonstrations(tmp_path, nano_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(nano_model_path)
    plain = _dataset_env(tmp_path).corpus(tokenizer)
    assert not hasattr(plain, "verdict")  # share 0: demonstrations only, as before
    env = _dataset_env(tmp_path, share=0.5, ptx_share=0.25)
    corpus = env.corpus(tokenizer)
    batch = corpus.warm_start_batch(random.Random(0), 1, 10)
    texts = [[tokenizer.decode(list(ids)) for ids in pair] for pair in batch]
    verdicts = [(context, target) for context, target in texts if "#" in target]
    assert len(batch) == 16 and 2 < len(verdicts) < 14
    for context, target in verdicts:
        a, b = map(int, re.search(r"C: Q: What is (\d+)\+(\d+)\? A:\n", context).groups())
        assert not is_probe(f"Q: What is {a}+{b}?\nA:")  # the gate's stay out of the corpus
        found = re.fullmatch(r" =(\d+) X(\d+)([+-]) Y(\d+)([+-]) #([XY])<eos>", target)
        assert found, target
        answer, x, x_mark, y, y_mark, winner = found.groups()
        assert int(answer) == a + b
        assert (x_mark == "+") == (x == answer) and (y_mark == "+") == (y == answer)
        assert f"X: {x}\nY: {y}\n" in context
        assert winner == ("Y" if y_mark == "+" and x_mark == "-" else "X")
    assert len(corpus.ptx_batch(random.Random(0), 40)) == 40
    probes = env.probes(8, 4, 0)
    assert len(probes) == 12 and all(is_probe(job.question) for job in probes)
