"""The critic on the model's own held-out answers: does it prefer what the verifier passed?

For every held-out prompt with a reference, up to `PAIRS_PER_PROMPT` (verified-correct,
verified-wrong) pairs of its sampled answers (the thresholds of `critic.calibration`) are judged
in both orders on the calibration aspect, with the run's critic settings, and summarised by
`quality`:
- `eval/critic_agreement`: the mean of 1 (the correct answer won), 0.5 (a tie, or an invalid
  verdict) and 0 (the wrong one won), so chance is 0.5;
- `eval/critic_consistency`: among pairs with both verdicts valid, the share whose two orders
  agree on the winner (a critic that follows the position flips);
- `eval/critic_invalid_rate`: the share of verdicts with no valid letter;
- `eval/critic_pairs`: how many pairs there were (NaN metrics when none: all answers right, or
  all wrong).
Left out: the rubric's other aspects (they need labelled pairs: `python -m selfcritic.critic
check-rubric`).
"""

from __future__ import annotations

import math
import random

from selfcritic.config import Config
from selfcritic.critic.calibration import agreement, calibration_pairs
from selfcritic.critic.check_rubric import invalid_rate, position_consistency
from selfcritic.critic.judge import Judge, Judged, PairJob, verdict_token_ids

PAIRS_PER_PROMPT = 2


def quality(judged: list[Judged]) -> dict[str, float]:
    """The metrics of pairs judged with the verified-correct answer `first` (docstring)."""
    agreements = [agreement(item.outcome) for item in judged]
    return {
        "eval/critic_agreement": sum(agreements) / len(agreements) if judged else math.nan,
        "eval/critic_consistency": position_consistency(judged),
        "eval/critic_invalid_rate": invalid_rate(judged),
        "eval/critic_pairs": float(len(judged)),
    }


def critic_pairs(questions, answers, scores, cfg: Config, seed: int) -> list[PairJob]:
    """(correct, wrong) PairJobs of each prompt's answers (`answers[k]`, `scores[k]`: its
    samples' texts and verifier scores), at most PAIRS_PER_PROMPT each, drawn with `seed`."""
    calibration, rng, jobs = cfg.critic.calibration, random.Random(seed), []
    for k, (question, texts, row) in enumerate(zip(questions, answers, scores, strict=True)):
        for i, j in calibration_pairs(row, PAIRS_PER_PROMPT, calibration, rng):
            jobs.append(
                PairJob(
                    ("eval", k, i, j),
                    question,
                    texts[i],
                    texts[j],
                    calibration.aspect,
                    calibration.description,
                )
            )
    return jobs


def critic_on_held_out(jobs, engine, encode, tokenizer, cfg: Config, seed: int) -> dict:
    """`quality` of the critic's verdicts on `jobs`, judged on `engine`."""
    letters = verdict_token_ids(tokenizer, cfg.critic.verdict_letters)
    judge = Judge(cfg.critic, encode, letters, cfg.rollout.max_model_len)
    judged = [item for item in judge.judge(jobs, engine, seed).judged if not item.skipped]
    return quality(judged)
