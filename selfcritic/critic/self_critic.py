"""SelfCritic: pairwise judging of each group's responses by the policy's own engine.

For each group a few pairs are scheduled; each pair is judged on every rubric aspect in both
orders (X/Y swapped), all in one batched engine call. Two verdict modes (`critic.verdict_mode`):
- probability (default): one prefill per pair and order and one token restricted to the verdict
  letters; the engine's logprobs of both letters give P(X) directly: soft, no parser, and the
  same distribution the learner's calibration loss trains;
- generative: greedy decoding of `critic.max_tokens` tokens, parsed (first letter X or Y);
  anything else is an invalid verdict, counted and treated as a tie.
Either way a verdict is P(X wins) in [0, 1], and the pair's outcome for the response shown first
is the mean over both orders of its win probability, so a verdict that flips with the order is a
tie. Each sample's score is its weighted win rate over aspects (0.5 when not compared), centred
per group. Left out: Bradley-Terry aggregation, mandatory-aspect precedence and calibration
(the critic issue adds them).
"""

from __future__ import annotations

import itertools
import math
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
    forward: float | None  # P(X wins) with `first` shown as X; None: invalid
    backward: float | None  # P(X wins) with `second` shown as X
    outcome: float  # for `first`: 1 win, 0 loss, 0.5 tie, or in between (soft)


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
        valid_pairs = sum(1 for v in self.verdicts if None not in (v.forward, v.backward))
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


def pair_outcome(forward: float | None, backward: float | None) -> float:
    """Outcome for the response shown first in `forward`, from P(X wins) in both orders: the mean
    of its win probabilities (`forward`, and 1 - `backward` where it is shown as Y); 0.5 when
    either verdict is invalid. Hard verdicts that flip with the order give exactly 0.5."""
    if forward is None or backward is None:
        return 0.5
    return (forward + 1.0 - backward) / 2


def order_flipped(forward: float | None, backward: float | None) -> bool:
    """Both orders valid and both preferring the same position (so different responses)."""
    if forward is None or backward is None:
        return False
    return (forward > 0.5) == (backward > 0.5)


def letter_probability(letter: str | None) -> float | None:
    """A parsed generative verdict as P(X wins)."""
    return {"X": 1.0, "Y": 0.0}.get(letter) if letter else None


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

    def __init__(
        self,
        cfg: CriticConfig,
        rubric: Rubric,
        encode: Callable[[str], list[int]],
        verdict_ids: tuple[int, int],  # token ids of "X" and "Y"
    ):
        self.cfg, self.rubric, self.encode, self.verdict_ids = cfg, rubric, encode, verdict_ids

    def _spec(self) -> SamplingSpec:
        if self.cfg.verdict_mode == "probability":
            return SamplingSpec(
                n=1,
                temperature=1.0,
                max_tokens=1,
                allowed_token_ids=self.verdict_ids,
                top_logprobs=2,
            )
        return SamplingSpec(n=1, temperature=0.0, max_tokens=self.cfg.max_tokens)

    def read(self, answer: Sample) -> float | None:
        """P(X wins) from one critic answer; None when it holds no verdict."""
        if self.cfg.verdict_mode != "probability":
            return letter_probability(parse_verdict(answer.text))
        if not answer.top_logprobs:
            return None
        first = answer.top_logprobs[0]
        x, y = (first.get(token) for token in self.verdict_ids)
        if x is None or y is None:
            return None
        p_x, p_y = math.exp(x), math.exp(y)
        return p_x / (p_x + p_y)

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
        answers = engine.generate(prompts, self._spec()) if prompts else []
        return self._aggregate(groups, jobs, prompts, answers)

    def _aggregate(self, groups, jobs, prompts, answers) -> CritiqueResult:
        result = CritiqueResult(scores=[])
        weights = {aspect.name: aspect.weight for aspect in self.rubric.aspects}
        per_group: list[dict[str, list]] = [{name: [] for name in weights} for _ in groups]
        for index, (g, first, second, aspect) in enumerate(jobs):
            forward = self.read(answers[2 * index][0])
            backward = self.read(answers[2 * index + 1][0])
            outcome = pair_outcome(forward, backward)
            result.verdicts.append(
                PairVerdict(g, first, second, aspect, forward, backward, outcome)
            )
            result.invalid += (forward is None) + (backward is None)
            result.inconsistent += order_flipped(forward, backward)
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
