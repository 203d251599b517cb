"""Critic verdicts on answer-labelled pairs, for any environment with references: the critic's
half of a generic warm-start.

A pair is a training question and two answers labelled by its reference, never by a model: the
reference's answer (right) and a wrong one (an integer's near miss, off by 1 to 9; else another
question's reference), the right one first; or, at `ties`, both right or both wrong. The target
is what a right generative critic writes on the correctness aspect: the answer it works out,
then each answer in the order shown with + (right) or - (wrong), then the verdict,
" =42 X41- Y42+ #Y" (the first shown on a tie, so the two orders cancel). That is the nano
world's form (selfcritic/envs/nano/world.py): a bare verdict token judged correctness at chance
in the feasibility study (../shared/notes/nano-feasibility.md), local checks did not.

`VerdictCorpus` mixes such pairs into an environment's demonstrations (`share` of each
warm-start batch, `ptx_share` of RL's PTX pairs); `answer_probes` gives the aspect gate such
pairs on the questions the corpus never uses (a hash of each question sets a `PROBE_FRACTION`
apart). Left out: aspects other than correctness (their labels need a hidden check the
environment supplies, as the tool world's `labelled` does) and answers longer than the
reference's (a pair's responses are the answers themselves).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfcritic.config import CriticConfig, setting
from selfcritic.critic.gate import probe_key
from selfcritic.critic.judge import PairJob, make_prompter
from selfcritic.envs.base import Pair

# (a question as the model sees it, its answer): what an environment labels pairs with (a
# dataset's prompt and reference; a generated task's question and answer)
Answered = tuple[str, str]

MARKS = ("+", "-")  # written after each answer: right, or wrong
PROBE_FRACTION = 0.2  # of the questions with a reference: the gate's, never the corpus's
_INTEGER = re.compile(r"-?\d+")


@dataclass
class VerdictOptions:
    """Critic verdicts in an environment's corpus (`env.verdicts`); share and ptx_share 0: the
    corpus holds demonstrations only."""

    share: float = setting(0.0, ge=0, lt=1)  # of each warm-start batch: critic verdicts
    ptx_share: float = setting(0.0, ge=0, le=1)  # of RL's PTX pairs: critic verdicts
    ties: float = setting(0.3, ge=0, le=1)  # of the pairs: both right or both wrong
    mark_weight: float = setting(1.0, gt=0)  # the marks' weight in the loss, as other tokens 1


def correctness_description(rubric: str, aspect: str) -> str:
    """The rubric's description of the correctness aspect `aspect`, else a plain one."""
    from rewards.registry import load_rubric

    found = [a.description for a in load_rubric(rubric).aspects if a.name == aspect]
    return found[0] if found else "the answer is right"


def near_miss(answer: str, rng: random.Random) -> str | None:
    """A wrong integer close to an integer `answer`, off by 1 to 9 (not negative where the
    answer is not); None where the answer is not an integer."""
    if not _INTEGER.fullmatch(answer):
        return None
    value = int(answer)
    offsets = [d for d in range(-9, 10) if d and (value < 0 or value + d >= 0)]
    return str(value + rng.choice(offsets))


def wrong_answer(answer: str, others: Sequence[str], rng: random.Random) -> str:
    """An answer that is not `answer`: its near miss, else one of `others` (other questions'
    references) that differs; ValueError where there is none."""
    missed = near_miss(answer, rng)
    if missed is not None:
        return missed
    different = [other for other in others if other != answer]
    if not different:
        raise ValueError(f"no wrong answer to pair with {answer!r}: every reference is the same")
    return rng.choice(different)


def worked_target(
    answer: str, shown: Sequence[tuple[str, bool]], letters: Sequence[str], marker: str
) -> str:
    """What a right critic writes: " =ANSWER", each shown answer with its letter and mark, then
    the marker and the winner (the second shown only where it alone is right)."""
    marks = "".join(
        f" {letter}{said}{MARKS[0] if right else MARKS[1]}"
        for letter, (said, right) in zip(letters, shown, strict=True)
    )
    winner = letters[1] if shown[1][1] and not shown[0][1] else letters[0]
    return f" ={answer}{marks} {marker}{winner}"


@dataclass(frozen=True)
class AnswerPair:
    """Two answers to one question, each right or wrong by its reference (the first is right
    where they differ)."""

    question: str  # the prompt as the critic sees it
    answer: str  # the reference: what the critic works out
    first: str
    second: str

    @property
    def rights(self) -> tuple[bool, bool]:
        return self.first == self.answer, self.second == self.answer

    def target(self, swapped: bool, letters: Sequence[str], marker: str) -> str:
        """The right critic's text, `second` shown first if `swapped`."""
        shown = list(zip((self.first, self.second), self.rights, strict=True))
        return worked_target(self.answer, shown[::-1] if swapped else shown, letters, marker)

    def job(self, key: tuple, aspect: str, description: str) -> PairJob:
        return PairJob(key, self.question, self.first, self.second, aspect, description)


def answer_pair(question: str, answer: str, others: Sequence[str], tie: bool, rng) -> AnswerPair:
    """Right then wrong; on a tie both right or both wrong (two different wrong answers where
    there are two) at even odds."""
    if not tie:
        return AnswerPair(question, answer, answer, wrong_answer(answer, others, rng))
    if rng.random() < 0.5:
        return AnswerPair(question, answer, answer, answer)
    first = wrong_answer(answer, others, rng)
    tries = (wrong_answer(answer, others, rng) for _ in range(8))
    return AnswerPair(question, answer, first, next((w for w in tries if w != first), first))


def is_probe(question: str) -> bool:
    """Whether a question is the gate's (`PROBE_FRACTION` of them, by a hash of its text)."""
    digest = hashlib.sha256(f"probe:{question}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < PROBE_FRACTION


def split(questions: Sequence[Answered], probe: bool) -> list[Answered]:
    """The questions on one side of the probe split."""
    return [q for q in questions if is_probe(q[0]) == probe]


def answer_probes(
    questions: Sequence[Answered],
    critic: CriticConfig,
    rubric: str,
    per_aspect: int,
    ties: int,
    seed: int,
) -> list[PairJob]:
    """`per_aspect` labelled pairs and `ties` tie pairs on the correctness aspect
    (`critic.calibration.aspect`, described as `rubric` does), on the probe questions."""
    pool = split(questions, probe=True)
    if not pool:
        return []
    aspect = critic.calibration.aspect
    description = correctness_description(rubric, aspect)
    rng = random.Random(f"verdicts:probes:{seed}")
    others = [answer for _, answer in pool]
    drawn = [(i, False) for i in range(per_aspect)] + [(i, True) for i in range(ties)]
    jobs = []
    for index, tie in drawn:
        question, answer = rng.choice(pool)
        pair = answer_pair(question, answer, others, tie, rng)
        jobs.append(pair.job(probe_key(aspect, index, tie=tie), aspect, description))
    return jobs


def with_verdicts(
    actor, questions: Sequence[Answered], options: VerdictOptions, critic, encode, rubric: str
):
    """`actor` (a PairsCorpus) alone where `options` mix in no verdicts, else a VerdictCorpus
    around it on `questions`, the aspect described as `rubric` does."""
    if options.share == 0 and options.ptx_share == 0:
        return actor
    description = correctness_description(rubric, critic.calibration.aspect)
    return VerdictCorpus(actor, questions, options, critic, encode, description)


class VerdictCorpus:
    """An environment's demonstrations and critic verdicts on its answer pairs, mixed per batch
    (the `Corpus` protocol, selfcritic/envs/base.py)."""

    def __init__(
        self,
        actor,
        questions: Sequence[Answered],
        options: VerdictOptions,
        critic: CriticConfig,
        encode,
        description: str,
    ) -> None:
        """`actor`: the demonstrations (a PairsCorpus); `questions`: the training questions
        with their answers; `encode`: the run's PromptEncoder."""
        self.actor, self.options, self.encode = actor, options, encode
        self.pool = split(questions, probe=False)
        if not self.pool:
            raise ValueError("env.verdicts: no training question has an answer to label pairs")
        self.others = [answer for _, answer in self.pool]
        self.prompter = make_prompter(critic, encode)
        self.aspect, self.description = critic.calibration.aspect, description
        self.letters, self.marker = tuple(critic.verdict_letters), critic.verdict_marker
        self.generative = critic.verdict_mode == "generative"
        tokenizer = encode.tokenizer
        marks = tokenizer.convert_tokens_to_ids(list(MARKS))
        self.token_weights = tuple((mark, options.mark_weight) for mark in marks)
        critic_recipe = {
            k: getattr(critic, k)
            for k in ("template", "verdict_letters", "verdict_marker", "verdict_mode")
        }
        self.recipe = actor.recipe | {"verdicts": vars(options), "critic": critic_recipe}
        self.sources: tuple[Path, ...] = (*actor.sources, Path(__file__))
        self.batch_size = actor.batch_size

    def verdict(self, rng: random.Random) -> Pair:
        """One critic pair: the prompt's ids and what a right critic writes, then the stop."""
        question, answer = rng.choice(self.pool)
        tie = rng.random() < self.options.ties
        pair = answer_pair(question, answer, self.others, tie, rng)
        swapped = rng.random() < 0.5
        first, second = (pair.second, pair.first) if swapped else (pair.first, pair.second)
        text = self.prompter.prompt(pair.question, first, second, self.aspect, self.description)
        target = pair.target(swapped, self.letters, self.marker)
        if not self.generative:  # probability verdicts: the letter alone
            target = target.split(self.marker)[-1]
        stop = self.encode.stop_token_ids()[0]
        ids = self.encode.tokenizer(target, add_special_tokens=False).input_ids
        return tuple(self.encode(text)), (*ids, stop)

    def mixed(self, rng: random.Random, count: int, share: float) -> tuple[Pair, ...]:
        """`count` pairs, each a critic verdict at `share`, else a demonstration."""
        critic = sum(rng.random() < share for _ in range(count))
        verdicts = tuple(self.verdict(rng) for _ in range(critic))
        return self.actor.ptx_batch(rng, count - critic) + verdicts

    def warm_start_batch(self, rng: random.Random, step: int, steps: int) -> tuple[Pair, ...]:
        return self.mixed(rng, self.batch_size, self.options.share)

    def ptx_batch(self, rng: random.Random, count: int) -> tuple[Pair, ...]:
        return self.mixed(rng, count, self.options.ptx_share)
