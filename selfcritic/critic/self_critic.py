"""SelfCritic: pairwise judging of each group's responses by the policy's own engine.

For each group a few pairs are scheduled; each pair is judged on every rubric aspect in both
orders (X/Y swapped), all in one batched, greedy engine call. A pair's outcome is a win only when
both orders agree; a verdict that flips with the order, or one that cannot be parsed, is a tie.
Each sample's score is its weighted win rate over aspects (0.5 when it was not compared), centred
per group. Left out: the probability verdict mode, Bradley-Terry aggregation, mandatory-aspect
precedence and calibration (the critic issue adds them).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rewards.base import Rubric
from selfcritic.config import CriticConfig
from selfcritic.critic.prompts import pair_prompt, parse_verdict
from selfcritic.rollout.types import Sample, SamplingSpec


@dataclass(frozen=True)
class PairVerdict:
    """One pair judged on one aspect in both orders."""

    group: int
    first: int
    second: int
    aspect: str
    forward: str | None  # verdict with `first` shown as X
    backward: str | None  # verdict with `second` shown as X
    outcome: float  # for `first`: 1 win, 0 loss, 0.5 tie


@dataclass
class CritiqueResult:
    scores: list[list[float]]  # [groups][n], centred per group
    verdicts: list[PairVerdict] = field(default_factory=list)
    invalid: int = 0  # unparsable verdicts
    inconsistent: int = 0  # valid pairs whose verdict flipped with the order
    judged: int = 0  # pair-aspect judgements (each = two critic calls)
    tokens: int = 0  # prompt + generated tokens the critic spent

    def metrics(self) -> dict[str, float]:
        calls = max(2 * self.judged, 1)
        valid_pairs = sum(1 for v in self.verdicts if v.forward and v.backward)
        consistency = 1 - self.inconsistent / valid_pairs if valid_pairs else float("nan")
        return {
            "critic/invalid_rate": self.invalid / calls,
            "critic/position_consistency": consistency,  # NaN when no pair had two valid verdicts
            "critic/judgements": float(self.judged),
            "critic/tokens": float(self.tokens),
        }


def schedule_pairs(n: int, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """`count` distinct unordered pairs of indices in 0..n-1, drawn without replacement."""
    pairs = list(itertools.combinations(range(n), 2))
    rng.shuffle(pairs)
    return pairs[:count]


def pair_outcome(forward: str | None, backward: str | None) -> float:
    """Outcome for the response shown first in `forward`: a win needs both orders to agree."""
    if forward == "X" and backward == "Y":
        return 1.0
    if forward == "Y" and backward == "X":
        return 0.0
    return 0.5


def win_rates(n: int, outcomes: list[tuple[int, int, float]]) -> list[float]:
    """Mean outcome per response over its comparisons; 0.5 for one never compared."""
    totals, counts = [0.0] * n, [0] * n
    for first, second, outcome in outcomes:
        totals[first] += outcome
        totals[second] += 1 - outcome
        counts[first] += 1
        counts[second] += 1
    return [total / count if count else 0.5 for total, count in zip(totals, counts, strict=True)]


class SelfCritic:
    """Judges groups with a RolloutEngine-like `generate`; `encode` turns text into prompt ids."""

    def __init__(self, cfg: CriticConfig, rubric: Rubric, encode: Callable[[str], list[int]]):
        self.cfg, self.rubric, self.encode = cfg, rubric, encode

    def score(self, questions: list[str], groups: list[list[Sample]], engine, seed: int):
        rng = random.Random(seed)
        jobs = []  # (group, first, second, aspect) in prompt order
        prompts = []
        for g, (question, group) in enumerate(zip(questions, groups, strict=True)):
            for first, second in schedule_pairs(len(group), self.cfg.pairs_per_group, rng):
                a, b = group[first].text, group[second].text
                for aspect in self.rubric.aspects:
                    jobs.append((g, first, second, aspect.name))
                    prompts.append(self.encode(pair_prompt(question, a, b, aspect.name)))
                    prompts.append(self.encode(pair_prompt(question, b, a, aspect.name)))
        spec = SamplingSpec(n=1, temperature=0.0, max_tokens=self.cfg.max_tokens)
        answers = engine.generate(prompts, spec) if prompts else []
        return self._aggregate(groups, jobs, prompts, answers)

    def _aggregate(self, groups, jobs, prompts, answers) -> CritiqueResult:
        result = CritiqueResult(scores=[])
        weights = {aspect.name: aspect.weight for aspect in self.rubric.aspects}
        per_group: list[dict[str, list]] = [{name: [] for name in weights} for _ in groups]
        for index, (g, first, second, aspect) in enumerate(jobs):
            forward = parse_verdict(answers[2 * index][0].text)
            backward = parse_verdict(answers[2 * index + 1][0].text)
            outcome = pair_outcome(forward, backward)
            result.verdicts.append(
                PairVerdict(g, first, second, aspect, forward, backward, outcome)
            )
            result.invalid += (forward is None) + (backward is None)
            result.inconsistent += bool(forward and backward and forward == backward)
            per_group[g][aspect].append((first, second, outcome))
        result.judged = len(jobs)
        result.tokens = sum(len(p) for p in prompts) + sum(
            len(a[0].completion_ids) for a in answers
        )
        total_weight = sum(weights.values())
        for group, outcomes in zip(groups, per_group, strict=True):
            rates = {name: win_rates(len(group), outcomes[name]) for name in weights}
            raw = [
                sum(weights[name] * rates[name][i] for name in weights) / total_weight
                for i in range(len(group))
            ]
            mean = sum(raw) / len(raw)
            result.scores.append([value - mean for value in raw])
        return result
