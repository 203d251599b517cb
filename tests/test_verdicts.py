"""Critic verdicts on answer-labelled pairs (selfcritic/envs/verdicts.py): the targets worked
out by hand, the labels, the probe split, and a dataset environment's corpus with them."""

from __future__ import annotations

import json
import random
import re

import pytest

from selfcritic.config import Config, CriticConfig
from selfcritic.envs.filler import FillerPair, filler_pair, has_filler, opens_with_filler
from selfcritic.envs.registry import build_environment
from selfcritic.envs.verdicts import (
    AnswerPair,
    Labeller,
    VerdictOptions,
    answer_pair,
    is_probe,
    list_near_miss,
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
    pair = AnswerPair("Q", "19", ("19", "18"), "<a>19</a>", "<a>18</a>")
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


def test_a_lists_near_misses_are_its_items_reordered_or_one_changed():
    rng, others = random.Random(0), ["go, hundred", "free, may, cat"]
    misses = {list_near_miss("go, hundred", others, rng) for _ in range(200)}
    # the one other order, or one item replaced by an item of another list (not its own)
    assert misses == {"hundred, go", "free, hundred", "may, hundred", "cat, hundred"} | {
        "go, free",
        "go, may",
        "go, cat",
    }
    assert list_near_miss("go", others, rng) is None  # one item: no list
    assert list_near_miss("a, a", ["a, a"], rng) is None  # no other order, no other item
    # a list answer's wrong answers in pairs are its near misses, never another question's
    pair = answer_pair("Q", "go, hundred", others, tie=False, rng=rng)
    assert pair.said[1] in misses


def test_pairs_are_labelled_by_the_reference():
    rng = random.Random(1)
    others = ["cat", "dog", "emu"]
    for _ in range(100):
        pair = answer_pair("Q", "cat", others, tie=False, rng=rng, render=lambda a: f"<{a}>")
        assert pair.rights == (True, False) and pair.said[1] in ("dog", "emu")
        assert (pair.first, pair.second) == ("<cat>", f"<{pair.said[1]}>")  # as written
        tie = answer_pair("Q", "12", others, tie=True, rng=rng)
        assert tie.rights in ((True, True), (False, False))
        if tie.rights == (False, False):
            assert tie.first != tie.second  # two different wrong answers
    with pytest.raises(ValueError, match="every reference is the same"):
        answer_pair("Q", "cat", ["cat"], tie=False, rng=rng)


def test_probes_are_labelled_and_on_questions_the_corpus_never_uses():
    labeller = Labeller(QUESTIONS, VerdictOptions(), CriticConfig(), "nano_math")
    jobs = labeller.probes(per_aspect=24, ties=8, seed=0)
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
    assert jobs == labeller.probes(24, 8, seed=0)  # seeded


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


def test_filler_pairs_and_the_hidden_check_by_hand():
    pair = FillerPair("Q", "<a>7</a>", "Sure! <a>7</a>", (True, False))
    assert pair.target(False, XY, "#") == " X+ Y- #X"
    assert pair.target(True, XY, "#") == " X- Y+ #Y"
    assert FillerPair("Q", "a", "a", (True, True)).target(True, XY, "#") == " X+ Y+ #X"
    rng = random.Random(0)
    phrases = ["Sure! ", "Well, "]
    for _ in range(50):
        drawn = filler_pair("Q", "<a>7</a>", phrases, tie=False, rng=rng)
        assert drawn.first == "<a>7</a>" and drawn.second in {p + "<a>7</a>" for p in phrases}
        tie = filler_pair("Q", "<a>7</a>", phrases, tie=True, rng=rng)
        assert tie.clean in ((True, True), (False, False))
    assert not opens_with_filler(" <a>7</a>", "<a>") and opens_with_filler("Sure! <a>7</a>", "<a>")
    assert opens_with_filler("7", "<a>")  # no answer at all: the habit's worst form


def test_a_closing_phrase_goes_after_the_answer_and_the_check_reads_after_the_tag():
    rng = random.Random(0)
    for _ in range(20):
        drawn = filler_pair("Q", "<a>7</a>", [" Hope this helps!"], tie=False, rng=rng, at="end")
        assert (drawn.first, drawn.second) == ("<a>7</a>", "<a>7</a> Hope this helps!")
    assert has_filler("<a>7</a> Hope this helps!", "a", "end")
    assert not has_filler("<a>7</a> ", "a", "end")  # spaces are not a phrase
    assert not has_filler("Sure! <a>7</a>", "a", "end")  # an opening phrase is the other check
    assert has_filler("Sure! <a>7</a>", "a", "start")
    assert has_filler("<a>7", "a", "end")  # no closed answer: the habit's worst form


def test_with_filler_set_the_gate_probes_both_aspects_with_the_rubrics_words():
    options = VerdictOptions(filler=["Sure! "], style_share=0.5)
    labeller = Labeller(QUESTIONS, options, CriticConfig(), "nano_style", lambda a: f"<a>{a}</a>")
    jobs = labeller.probes(per_aspect=6, ties=2, seed=0)
    by_aspect = {aspect: [j for j in jobs if j.aspect == aspect] for aspect in labeller.aspects}
    assert labeller.aspects == ("correct", "no_filler")
    assert [len(v) for v in by_aspect.values()] == [8, 8]
    # nano_style has no `correct`: the plain words; its no_filler description is the rubric's
    assert {j.description for j in by_aspect["correct"]} == {"the answer is right"}
    assert {j.description for j in by_aspect["no_filler"]} == {"nothing off-topic after the answer"}
    for job in by_aspect["no_filler"]:
        if job.key[0] == "probe":
            assert not opens_with_filler(job.first, "<a>") and job.second.startswith("Sure! <a>")
