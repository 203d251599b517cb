"""Reasoning blocks stripped before the verifier (selfcritic/envs/reasoning.py), and the critic's
quality metrics on held-out pairs (selfcritic/eval/critic_quality.py), on hand-worked values."""

from __future__ import annotations

import math

import pytest

from rewards.pool import VerifierPool
from selfcritic.config import Config, ConfigError
from selfcritic.critic.judge import Judged, PairJob
from selfcritic.envs.dataset import DatasetEnvironment, DatasetOptions
from selfcritic.envs.reasoning import check_tags, final_answer
from selfcritic.eval.critic_quality import critic_pairs, quality
from selfcritic.eval.held_out import held_out_metrics
from selfcritic.rollout.types import Sample

THINK = ("<think>", "</think>")


def test_final_answer_is_what_follows_the_last_closing_tag():
    assert final_answer("<think>2+3 is 5</think> 5\n", THINK) == "5"
    assert final_answer("<think>a</think>b</think> 7", THINK) == "7"  # the last one counts
    assert final_answer("2+3 is 5</think>5", THINK) == "5"  # opened by the prompt's template
    assert final_answer("<think>2+3 is", THINK) is None  # cut while thinking: no final part
    assert final_answer("5", THINK) is None  # never closed a block: no final part either
    assert final_answer("<think>x</think>", THINK) == ""  # closed, then nothing: an empty one
    assert final_answer("<think>x</think>5", None) == "<think>x</think>5"  # no tags: all of it


def test_reasoning_tags_must_be_a_pair():
    assert check_tags(["<think>", "</think>"]) == THINK and check_tags(None) is None
    for bad in (["<think>"], ["<think>", ""], ["a", "b", "c"]):
        with pytest.raises(ConfigError, match="env.reasoning_tags"):
            check_tags(bad)


class _Scripted:
    """Answers every prompt with the next of its texts (the model's held-out answers)."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = iter(texts)

    def generate(self, prompts, spec):
        return [
            [Sample(tuple(p), (5,) * 3, next(self.texts), (), "stop", 0) for _ in range(spec.n)]
            for p in prompts
        ]


def test_held_out_answers_are_verified_on_their_final_part(tmp_path, nano_model_path):
    """Two held-out questions, 3 samples and 1 greedy answer each; the verifier sees the final
    part, an answer that never closes its block counts as wrong and as having none."""
    from transformers import AutoTokenizer

    data = tmp_path / "q.jsonl"
    data.write_text('{"q": "2+3=", "a": 5}\n{"q": "1+1=", "a": 2}\n')
    cfg = Config()
    cfg.critic.enabled = False
    cfg.eval.samples = 3
    options = {"name": "dataset", "path": str(data), "prompt_key": "q", "reference_key": "a"}
    env = DatasetEnvironment(
        DatasetOptions(**options, heldout_path=str(data), reasoning_tags=list(THINK)), cfg
    )
    sampled = [
        "<think>2+3 is 5</think>5",  # right
        "<think>it is 6</think> 6",  # wrong
        "<think>2+3 is 5, so 5",  # never closed: no final part, wrong
        "<think>1+1</think>2",  # right
        "2",  # no block at all: no final part, wrong
        "<think></think>2",  # right
    ]
    greedy = ["<think>sum</think>5", "<think>sum is 2"]  # right; no final part
    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    pool = VerifierPool("exact_number", workers=0)
    try:
        metrics = held_out_metrics(env, _Scripted(sampled + greedy), tokenizer, cfg, pool, 0)
    finally:
        pool.close()
    assert metrics["eval/verifier_mean"] == pytest.approx(3 / 6)
    assert metrics["eval/pass_at_n"] == 1.0  # each question has a right sample
    assert metrics["eval/greedy_mean"] == 0.5
    assert metrics["eval/no_final_answer"] == pytest.approx(2 / 6)


def _judged(forward, backward) -> Judged:
    job = PairJob(("eval", 0, 0, 1), "q", "right", "wrong", "correct")
    answer = Sample((), (), "", (), "stop", 0)
    return Judged(job, forward, backward, answer, answer)


def test_critic_quality_on_hand_judged_pairs():
    """Four pairs, the correct answer first: P(first wins) shown as X (forward) and as Y
    (backward, P(X wins) with the order swapped)."""
    judged = [
        _judged(0.9, 0.2),  # correct wins both orders: outcome (0.9 + 0.8) / 2 > 0.5 -> 1
        _judged(0.75, 0.75),  # X both times (the position): (0.75 + 0.25) / 2, a tie -> 0.5
        _judged(0.3, 0.6),  # wrong wins both orders: (0.3 + 0.4) / 2 -> 0, consistent
        _judged(None, 0.1),  # one verdict invalid: outcome 0.5 -> 0.5
    ]
    metrics = quality(judged)
    assert metrics["eval/critic_agreement"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert metrics["eval/critic_consistency"] == pytest.approx(2 / 3)  # of the 3 valid pairs
    assert metrics["eval/critic_invalid_rate"] == pytest.approx(1 / 8)
    assert metrics["eval/critic_pairs"] == 4
    assert math.isnan(quality([])["eval/critic_agreement"])


def test_critic_pairs_are_correct_first_and_capped():
    cfg = Config()
    jobs = critic_pairs(
        ["q0", "q1"],
        [["a", "b", "c", "d"], ["e", "f", "g", "h"]],
        [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]],  # the second question: no wrong answer
        cfg,
        seed=0,
    )
    assert len(jobs) == 2  # 4 (correct, wrong) pairs of q0, capped at 2; none of q1
    assert all(job.first in "ad" and job.second in "bc" for job in jobs)
    assert {job.aspect for job in jobs} == {cfg.critic.calibration.aspect}
