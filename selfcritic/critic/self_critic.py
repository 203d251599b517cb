"""SelfCritic: one step's judging, from groups of responses to scores, metrics and examples.

Per step, in one batched engine call (`Judge`): the rubric pairs of every group (the schedule of
`schedule.py`, each pair on each aspect of the group's rubric, both orders), the calibration pairs
of the verifiable groups (`calibration.py`), and, when due, the anchor set (`anchor.py`). Then:
- the aspect gate (`gate.py`), when due: the critic judges labelled probe pairs first, in a call
  of their own, and the aspects it judges at chance are left out of the step's pairs;
- scores: per pair, the open aspects' outcomes combine (mandatory precedence or weighted), then per
  group win rate or Bradley-Terry (`aggregate.py`), centred per group;
- calibration: agreement of the correctness verdicts with the verifier, critic examples for the
  learner (topped up from the replay buffer), and in the RL form sampled verdict groups rewarded
  for agreeing (a second call: they are sampled, not read);
- metrics: score distribution, per-aspect decisiveness and agreement with the verifier, invalid
  verdicts, position consistency, length bias, anchor drift, tokens;
- injection (`critic.injection`, injection.py): a share of the calibration pairs carries an
  injection in one response; the anchor set is re-judged with injections too, and a critic
  easier to talk round than at first raises a warning (`CritiqueResult.warnings`) and, with
  `critic.anchor.pause_on_alarm`, pauses the critic's share of the reward (no rubric pair is
  judged, every score is 0) until a measurement is back within the thresholds; the policy's
  own samples are searched for the phrasings (`policy/injection_rate`).
Which weights judge is the caller's choice of `engine` (selfcritic/critic/judge_weights.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rewards.base import Rubric
from selfcritic.config import CriticConfig
from selfcritic.critic.aggregate import AGGREGATIONS, centred, combine_aspects, order_flipped
from selfcritic.critic.anchor import AnchorSet
from selfcritic.critic.calibration import Calibrator, agreement, rl_groups, ruling
from selfcritic.critic.examples import CriticExample
from selfcritic.critic.gate import AspectGate
from selfcritic.critic.injection import InjectionWatch, Injector, load_families
from selfcritic.critic.judge import Judge, Judged, PairJob
from selfcritic.critic.schedule import schedule
from selfcritic.rollout.types import Sample


@dataclass
class CritiqueResult:
    scores: list[list[float]]  # [groups][n], centred per group
    judged: list[Judged] = field(default_factory=list)  # rubric pairs, key (group, i, j)
    invalid: int = 0  # invalid verdicts (each judged pair has two)
    inconsistent: int = 0  # valid pairs whose verdict flipped with the order
    prompt_tokens: int = 0
    completion_tokens: int = 0
    examples: list[CriticExample] = field(default_factory=list)  # calibration, supervised form
    rl_groups: list[tuple[list[Sample], list[float]]] = field(default_factory=list)  # RL form
    extra: dict[str, float] = field(default_factory=dict)  # calibration, anchor, aspect metrics
    warnings: list[str] = field(default_factory=list)  # lines for the run's log (the anchor alarm)

    def metrics(self) -> dict[str, float]:
        calls = max(2 * len(self.judged), 1)
        valid = sum(1 for j in self.judged if j.first_judgement_valid)
        flat = [s for group in self.scores for s in group]
        spread = math.sqrt(sum(s * s for s in flat) / len(flat)) if flat else float("nan")
        return {
            "critic/invalid_rate": self.invalid / calls,
            # NaN when no pair had two valid verdicts
            "critic/position_consistency": 1 - self.inconsistent / valid if valid else math.nan,
            "critic/judgements": float(len(self.judged)),
            "critic/tokens": float(self.prompt_tokens + self.completion_tokens),
            "critic/score_std": spread,
            "critic/score_min": min(flat, default=math.nan),
            "critic/score_max": max(flat, default=math.nan),
            "critic/calibration_examples": float(len(self.examples)),
        } | self.extra


class SelfCritic:
    """Judges groups with a RolloutEngine-like `generate`; `encode` turns text into prompt ids."""

    def __init__(
        self,
        cfg: CriticConfig,
        rubric: Rubric,
        encode: Callable[[str], list[int]],
        verdict_ids: tuple[int, int],
        probes: list[PairJob] | None = None,
        context_len: int | None = None,
    ) -> None:
        """`probes`: the aspect gate's labelled pairs (`gate.load_probes`; none: no gate);
        `context_len`: the engines' context, past which responses are cut in critic prompts."""
        self.cfg, self.rubric = cfg, rubric
        self.judge = Judge(cfg, encode, verdict_ids, context_len)
        letters, marker = tuple(cfg.verdict_letters), cfg.verdict_marker
        self.calibrator = Calibrator(
            cfg.calibration,
            encode,
            verdict_ids,
            self.judge.prompt_text,
            self.judge.verdict_cue,
            Injector(cfg.injection, letters, marker),
        )
        self.anchor = AnchorSet(cfg.anchor, load_families(cfg.injection.source), letters, marker)
        self.watch = InjectionWatch(cfg.injection)
        self.gate = AspectGate(cfg.gate, probes or [])

    def state(self) -> dict:
        """What a resumed run needs: the replay buffer, the anchor set, the excluded questions,
        the gate's last measurement."""
        return {
            "buffer": list(self.calibrator.buffer),
            "excluded": set(self.calibrator.excluded),
            "anchor": list(self.anchor.reference),
            "anchor_injected": list(self.anchor.injected),
            "anchor_baseline": self.anchor.baseline,
            "anchor_alarmed": self.anchor.alarmed,
            "gate": dict(self.gate.agreement),
            "gate_ties": dict(self.gate.tie_agreement),
        }

    def load_state(self, state: dict) -> None:
        self.calibrator.buffer.clear()
        self.calibrator.buffer.extend(state["buffer"])
        self.calibrator.excluded = set(state["excluded"])
        self.anchor.reference = list(state["anchor"])
        # absent in older checkpoints: no injected copies, the baseline measured again
        self.anchor.injected = list(state.get("anchor_injected", [None] * len(state["anchor"])))
        self.anchor.baseline = state.get("anchor_baseline")
        self.anchor.alarmed = state.get("anchor_alarmed", False)
        self.gate.agreement = dict(state.get("gate", {}))  # absent in older checkpoints
        self.gate.tie_agreement = dict(state.get("gate_ties", {}))

    def exclude_from_calibration(self, questions) -> None:
        """Leakage guard: these questions (evaluation prompts) never yield calibration pairs."""
        self.calibrator.excluded.update(questions)

    def score(
        self,
        questions: list[str],
        groups: list[list[Sample]],
        engine,
        seed: int,
        *,
        verified: list[list[float | None]] | None = None,
        rubrics: list[Rubric] | None = None,
        step: int = 1,
        rl_temperature: float = 1.0,
        rl_engine=None,
        rl_logprobs: bool = True,
    ) -> CritiqueResult:
        """Score every group; `verified[g][i]` is sample i's verifier score (None: no verifier)
        and drives calibration; `rubrics[g]` overrides the critic's rubric for group g. RL-form
        verdicts are sampled on `rl_engine` (default `engine`): the policy's own engine, so that
        they are on-policy for the learner even when a lagged or frozen copy judges; `rl_logprobs`:
        whether they carry the engine's sampling logprobs (`SamplingSpec.logprobs`)."""
        rng = random.Random(seed)
        cut_before, skipped_before = self.judge.cut_prompts, self.judge.skipped_too_long
        probe_call = None
        if self.gate.due(step):  # before the step's pairs: a closed aspect is not judged
            probe_call = self.judge.judge(self.gate.probes, engine, seed)
            self.gate.update([item for item in probe_call.judged if not item.skipped])
        texts = [[s.critic_text for s in group] for group in groups]
        rubrics = rubrics or [self.rubric] * len(groups)
        verified = verified or [[None] * len(group) for group in groups]
        # the robustness alarm of the last anchor measurement pauses the critic's reward
        paused = self.cfg.anchor.pause_on_alarm and self.anchor.alarmed
        rubric_jobs = [] if paused else self._rubric_jobs(questions, texts, rubrics, rng)
        calibrating = self.cfg.calibration.enabled
        calibration_jobs = (
            self.calibrator.jobs(questions, texts, verified, rng) if calibrating else []
        )
        anchor_jobs = self.anchor.jobs() if self.anchor.due(step) else []
        call = self.judge.judge(rubric_jobs + calibration_jobs + anchor_jobs, engine, seed)
        judged = call.judged[: len(rubric_jobs)]
        calibrated = call.judged[len(rubric_jobs) : len(rubric_jobs) + len(calibration_jobs)]
        # a pair too long to judge gives no outcome and no calibration example
        calibrated = [item for item in calibrated if not item.skipped]
        calibration_jobs = [item.job for item in calibrated]
        invalid = sum((j.forward is None) + (j.backward is None) for j in judged if not j.skipped)
        resolved: dict[str, float] = {}
        if self.cfg.invalid_pairs == "resolve":
            judged, resolved = self.judge.resolve_invalid(judged, engine, seed + 2)
        result = CritiqueResult(
            scores=self._scores(groups, rubrics, judged),
            judged=judged,
            invalid=invalid,
            inconsistent=sum(
                order_flipped(j.forward, j.backward) for j in judged if not j.rejudged
            ),
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
        )
        if probe_call is not None:
            result.prompt_tokens += probe_call.prompt_tokens
            result.completion_tokens += probe_call.completion_tokens
        result.extra.update(self.gate.metrics())
        result.extra.update(resolved)
        judged_ones = [item for item in judged if not item.skipped]
        result.extra.update(_aspect_metrics(judged_ones, verified, self.cfg.calibration))
        result.extra["critic/length_bias"] = length_bias(result.scores, groups)
        if calibrating:
            self._calibrate(
                result,
                calibrated,
                calibration_jobs,
                rng,
                engine=rl_engine or engine,
                temperature=rl_temperature,
                seed=seed + 1,
                logprobs=rl_logprobs,
            )
        if anchor_jobs:
            result.extra.update(self.anchor.drift(call.judged[-len(anchor_jobs) :]))
            if self.anchor.warning:
                result.warnings.append(self.anchor.warning)
        result.extra["critic/paused"] = float(paused)
        result.extra.update(self.watch.metrics([text for group in texts for text in group]))
        self.calibrator.excluded |= self.anchor.freeze(judged_ones, rng)
        result.extra["critic/cut_prompts"] = float(self.judge.cut_prompts - cut_before)
        skipped = self.judge.skipped_too_long - skipped_before
        result.extra["critic/skipped_too_long"] = float(skipped)
        return result

    def _rubric_jobs(self, questions, texts, rubrics, rng) -> list[PairJob]:
        cfg, jobs = self.cfg, []
        for g, (question, group) in enumerate(zip(questions, texts, strict=True)):
            pairs = schedule(
                len(group), cfg.schedule, cfg.comparisons_per_response, cfg.all_pairs_max_n, rng
            )
            aspects = [aspect for aspect in rubrics[g].aspects if self.gate.is_open(aspect.name)]
            for i, j in pairs:
                for aspect in aspects:
                    jobs.append(
                        PairJob(
                            (g, i, j), question, group[i], group[j], aspect.name, aspect.description
                        )
                    )
        return jobs

    def _scores(self, groups, rubrics: list[Rubric], judged: list[Judged]) -> list[list[float]]:
        per_pair: dict[tuple, dict[str, float]] = {}
        for item in judged:
            outcome = item.reward_outcome
            if outcome is not None:  # a dropped pair gives no outcome on that aspect
                per_pair.setdefault(item.job.key, {})[item.job.aspect] = outcome
        outcomes: list[list] = [[] for _ in groups]
        for (g, i, j), aspects in per_pair.items():
            weights = {a.name: a.weight for a in rubrics[g].aspects}
            mandatory = {a.name for a in rubrics[g].aspects if a.mandatory}
            outcomes[g].append(
                (i, j, combine_aspects(aspects, weights, mandatory, self.cfg.mandatory))
            )
        aggregate = AGGREGATIONS[self.cfg.aggregation]
        return [
            centred(aggregate(len(group), found, self.cfg.prior_std))
            for group, found in zip(groups, outcomes, strict=True)
        ]

    def _calibrate(
        self, result, calibrated, jobs, rng, *, engine, temperature, seed, logprobs
    ) -> None:
        """Calibration examples, and RL-form verdict groups sampled on `engine` with the
        given temperature, seed and logprobs setting."""
        agreements = [agreement(item.outcome) for item in calibrated]
        form = self.cfg.calibration.form
        examples, replayed = [], 0
        if form in ("supervised", "both"):
            examples, replayed = self.calibrator.examples(calibrated, rng)
        result.examples = examples
        if form in ("rl", "both") and jobs:
            sampled = self.judge.sample(
                jobs, engine, self.cfg.calibration.rl_samples, temperature, seed, logprobs
            )
            result.rl_groups = rl_groups(sampled, self.judge.letter_of, self.judge.prompter.letters)
            result.completion_tokens += sum(
                len(s.completion_ids) for g, _ in result.rl_groups for s in g
            )
        injected = [
            agreement(item.outcome)
            for item in calibrated
            if getattr(item.job.key, "injected", None) is not None
        ]
        result.extra.update(
            {
                "critic/agreement": _mean(agreements),
                # the pairs with an injection in one response (critic.injection.rate)
                "critic/agreement_injected": _mean(injected),
                "critic/calibration_injected": float(len(injected)),
                "critic/agreement_soft": _mean([item.outcome for item in calibrated]),
                "critic/calibration_pairs": float(len(calibrated)),
                "critic/calibration_replayed": float(replayed),
            }
        )
        if result.rl_groups:
            rewards = [r for _, group_rewards in result.rl_groups for r in group_rewards]
            result.extra["critic/rl_verdict_reward"] = _mean(rewards)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _aspect_metrics(judged: list[Judged], verified, calibration) -> dict[str, float]:
    """Per aspect: how decided its verdicts are (mean |2o-1|), and on pairs of a verified-correct
    and a verified-wrong sample how often it prefers the correct one (does calibration on
    correctness carry over to the other aspects?)."""
    decided: dict[str, list[float]] = {}
    agrees: dict[str, list[float]] = {}
    for item in judged:
        g, i, j = item.job.key
        aspect = item.job.aspect
        decided.setdefault(aspect, []).append(abs(2 * item.outcome - 1))
        first, second = ruling(verified[g][i], calibration), ruling(verified[g][j], calibration)
        if first is not None and second is not None and first != second:
            outcome_for_correct = item.outcome if first else 1 - item.outcome
            agrees.setdefault(aspect, []).append(agreement(outcome_for_correct))
    metrics = {f"critic/decisive/{name}": _mean(values) for name, values in decided.items()}
    metrics |= {f"critic/verifier_agreement/{name}": _mean(v) for name, v in agrees.items()}
    return metrics


def length_bias(scores: list[list[float]], groups: list[list[Sample]]) -> float:
    """Mean over groups of the Pearson correlation between a response's critic score and its
    length in tokens (groups where either is constant are skipped; NaN when all are)."""
    correlations = []
    for group_scores, group in zip(scores, groups, strict=True):
        lengths = [len(s.completion_ids) for s in group]
        correlation = _pearson(group_scores, lengths)
        if correlation is not None:
            correlations.append(correlation)
    return _mean(correlations)


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx < 1e-12 or syy < 1e-12:
        return None
    return sxy / math.sqrt(sxx * syy)
