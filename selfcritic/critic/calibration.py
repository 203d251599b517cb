"""Closed-loop calibration: verifiable groups teach the critic what "correct" means.

On a group whose samples a verifier scored, pairs of a verified-correct sample (score >=
`correct_min`) and a verified-wrong one (score <= `wrong_max`) are judged on the correctness
aspect. The verifier's ruling is the truth the critic's outcome is compared with (agreement), and
each pair becomes two `CriticExample`s, one per order, whose target puts `target` on the correct
response's letter: the supervised form the learner's calibration loss trains. The RL form rewards
sampled verdicts instead (1 when they pick the correct response, else 0), as extra policy groups.

Starvation guard: a replay buffer keeps earlier steps' examples, so every step hands the learner
at least `min_pairs` pairs even when the policy rarely fails. Leakage guard: a question in the
excluded set (the anchor set, evaluation prompts) never yields a calibration pair. The critic
never sees the reference or the scores: only the two responses.

Injection resistance (`critic.injection`, selfcritic/critic/injection.py): a share of the pairs
carries injected text in one response, the correct or the wrong one at even odds, the ruling
unchanged; the key names the family (`CalibrationKey.injected`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from selfcritic.config import CalibrationConfig, Config
from selfcritic.critic.examples import CriticExample
from selfcritic.critic.injection import Injector
from selfcritic.critic.judge import Judged, PairJob
from selfcritic.preflight import Problems, preflight_check


@dataclass(frozen=True)
class CalibrationKey:
    """The handle of a calibration job: the group and the correct and wrong samples' indices."""

    group: int
    correct: int
    wrong: int
    injected: str | None = None  # the family of the injection one response carries, if any


def ruling(score: float | None, cfg: CalibrationConfig) -> bool | None:
    """True: verified correct; False: verified wrong; None: no verifier, or in between."""
    if score is None:
        return None
    if score >= cfg.correct_min:
        return True
    return False if score <= cfg.wrong_max else None


def calibration_pairs(
    verified: list[float | None], count: int, cfg: CalibrationConfig, rng: random.Random
) -> list[tuple[int, int]]:
    """Up to `count` distinct (correct index, wrong index) pairs of one group."""
    rulings = [ruling(score, cfg) for score in verified]
    correct = [i for i, r in enumerate(rulings) if r is True]
    wrong = [i for i, r in enumerate(rulings) if r is False]
    pairs = [(c, w) for c in correct for w in wrong]
    rng.shuffle(pairs)
    return pairs[:count]


def agreement(outcome: float) -> float:
    """1 when the critic preferred the verified-correct response, 0.5 for a tie, 0 otherwise."""
    return 1.0 if outcome > 0.5 else 0.5 if outcome == 0.5 else 0.0


def target_probs(correct_shown_first: bool, target: float) -> tuple[float, float]:
    """The verdict distribution over (X, Y) the verifier implies."""
    return (target, 1 - target) if correct_shown_first else (1 - target, target)


class Calibrator:
    """Schedules calibration jobs, turns judged pairs into examples, keeps the replay buffer."""

    def __init__(
        self,
        cfg: CalibrationConfig,
        encode: Callable[[str], list[int]],
        verdict_ids: tuple[int, int],
        prompt_text: Callable[[PairJob, bool], str],
        verdict_cue: Callable[[str], str],
        injector: Injector | None = None,
    ) -> None:
        """`prompt_text(job, swapped)` is the judge's critic prompt; `verdict_cue(answer)` is the
        text between the prompt and the verdict letter (the rationale and marker it wrote);
        `injector` puts injections into a share of the pairs (None: none)."""
        self.cfg, self.encode, self.verdict_ids = cfg, encode, verdict_ids
        self.injector = injector
        self.prompt_text, self.verdict_cue = prompt_text, verdict_cue
        self.buffer: deque[tuple[CriticExample, CriticExample]] = deque(maxlen=cfg.buffer_size)
        self.excluded: set[str] = set()  # questions never used (anchor and evaluation prompts)

    def jobs(
        self,
        questions: list[str],
        groups: list[list[str]],
        verified: list[list[float | None]],
        rng: random.Random,
    ) -> list[PairJob]:
        """Correct-vs-wrong pairs of the verifiable groups, on the correctness aspect."""
        jobs = []
        for g, (question, texts) in enumerate(zip(questions, groups, strict=True)):
            if question in self.excluded:
                continue
            for correct, wrong in calibration_pairs(
                verified[g], self.cfg.pairs_per_group, self.cfg, rng
            ):
                job = PairJob(
                    CalibrationKey(g, correct, wrong),
                    question,
                    texts[correct],
                    texts[wrong],
                    self.cfg.aspect,
                    self.cfg.description,
                )
                if self.injector is not None:
                    job, drawn = self.injector.job(job, rng)
                    if drawn is not None:
                        job = replace(job, key=replace(job.key, injected=drawn.family))
                jobs.append(job)
        return jobs

    def examples(self, judged: list[Judged], rng: random.Random) -> tuple[list[CriticExample], int]:
        """This step's examples (fresh pairs, then replayed ones up to `min_pairs`) and how many
        pairs were replayed. Fresh pairs join the buffer after the draw."""
        fresh = [self._pair_examples(item) for item in judged]
        missing = max(0, self.cfg.min_pairs - len(fresh))
        replayed = rng.sample(list(self.buffer), min(missing, len(self.buffer)))
        self.buffer.extend(fresh)
        return [e for pair in fresh + replayed for e in pair], len(replayed)

    def _pair_examples(self, item: Judged) -> tuple[CriticExample, CriticExample]:
        """Both orders: `first` (the correct response) shown as X, then as Y."""
        made = []
        for swapped, answer in ((False, item.forward_answer), (True, item.backward_answer)):
            text = self.prompt_text(item.job, swapped) + self.verdict_cue(answer.text)
            made.append(
                CriticExample(
                    prompt_ids=tuple(self.encode(text)),
                    verdict_token_ids=self.verdict_ids,
                    target_probs=target_probs(not swapped, self.cfg.target),
                    weight=self.cfg.weight,
                )
            )
        return made[0], made[1]


def rl_groups(sampled, letter_of: Callable, letters: tuple[str, str]):
    """The RL form: per job and order, its sampled verdicts and rewards (1: picked the correct
    response, shown as X unless swapped; 0: picked the wrong one or invalid)."""
    groups = []
    for _, swapped, samples in sampled:
        right = letters[1] if swapped else letters[0]
        groups.append((samples, [float(letter_of(s) == right) for s in samples]))
    return groups


@preflight_check
def _correct_and_wrong_apart(cfg: Config, problems: Problems) -> None:
    """`critic.calibration.wrong_max` below `critic.calibration.correct_min`."""
    calibration = cfg.critic.calibration
    problems.require(
        calibration.wrong_max < calibration.correct_min,
        "critic.calibration.wrong_max",
        "must be below critic.calibration.correct_min (a sample cannot be both)",
    )
