"""Critic verdicts on labelled pairs, for any environment with answers: the critic's half of a
generic warm-start.

Correctness pairs: a training question and two answers labelled by its answer, never by a model: the
answer (right) and a wrong one (an integer's near miss, off by 1 to 9; a list's items in another
order or with one item changed; else another question's answer), the right one first; or, at `ties`,
both right or both wrong. The target is what a right generative critic writes on the correctness
aspect: the answer it works out, then each answer in the order shown with + (right) or - (wrong),
then the verdict, " =42 X41- Y42+ #Y" (the first shown on a tie, so the two orders cancel). That is
the nano world's form (selfcritic/envs/nano/world.py): a bare verdict token judged correctness at
chance in the feasibility study (../shared/notes/nano-feasibility.md), local checks did not.
Style pairs (`filler` set; selfcritic/envs/filler.py), at `style_share` of the pairs: one
response with and without an opening phrase, judged on `style_aspect` with bare marks.
An environment's `render` turns an answer into the response the actor writes (e.g. inside its
answer tag): the critic sees responses as RL will show them.

`VerdictCorpus` mixes such pairs into an environment's demonstrations (`share` of each
warm-start batch, `ptx_share` of RL's PTX pairs); `verdict_probes` gives the aspect gate such
pairs on the questions the corpus never uses (a hash of each question sets a `PROBE_FRACTION`
apart). Left out: other aspects (their labels need a hidden check the environment supplies, as
the tool world's `labelled` does) and responses longer than an answer and a phrase.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfcritic.config import CriticConfig, setting
from selfcritic.critic.gate import probe_key
from selfcritic.critic.judge import PairJob, make_prompter
from selfcritic.envs import filler
from selfcritic.envs.base import Pair
from selfcritic.envs.filler import PLACES, FillerPair, filler_pair

# (a question as the model sees it, its answer): what an environment labels pairs with (a
# dataset's prompt and reference; a generated task's question and answer)
Answered = tuple[str, str]

MARKS = ("+", "-")  # written after each answer: right, or wrong
PROBE_FRACTION = 0.2  # of the questions with a reference: the gate's, never the corpus's
_INTEGER = re.compile(r"-?\d+")
LIST_SEPARATOR = ", "  # between a list answer's items (reasoning-gym's lists of words)


@dataclass
class VerdictOptions:
    """Critic verdicts in an environment's corpus (`env.verdicts`); share and ptx_share 0: the
    corpus holds demonstrations only."""

    share: float = setting(0.0, ge=0, lt=1)  # of each warm-start batch: critic verdicts
    ptx_share: float = setting(0.0, ge=0, le=1)  # of RL's PTX pairs: critic verdicts
    ties: float = setting(0.3, ge=0, le=1)  # of the pairs: both right or both wrong
    mark_weight: float = setting(1.0, gt=0)  # the marks' weight in the loss, as other tokens 1
    # a style defect a hidden check counts (selfcritic/envs/filler.py): phrases that open a
    # share of the demonstrations (`filler_share`; the environment applies it) and the critic's
    # style pairs (`style_share` of its pairs) on `style_aspect`; empty: correctness pairs only
    filler: list[str] = field(default_factory=list)
    filler_share: float = setting(0.0, ge=0, le=1)
    # where a phrase goes: before the answer ("start") or after it ("end", where an opening
    # phrase would cost a small model accuracy: selfcritic/envs/filler.py)
    filler_at: str = setting("start", one_of=PLACES)
    style_aspect: str = "no_filler"
    style_share: float = setting(0.5, ge=0, le=1)


def description_of(rubric: str, aspect: str, otherwise: str) -> str:
    """The rubric's description of `aspect`, else `otherwise`."""
    from rewards.registry import load_rubric

    found = [a.description for a in load_rubric(rubric).aspects if a.name == aspect]
    return found[0] if found else otherwise


def near_miss(answer: str, rng: random.Random) -> str | None:
    """A wrong integer close to an integer `answer`, off by 1 to 9 (not negative where the
    answer is not); None where the answer is not an integer."""
    if not _INTEGER.fullmatch(answer):
        return None
    value = int(answer)
    offsets = [d for d in range(-9, 10) if d and (value < 0 or value + d >= 0)]
    return str(value + rng.choice(offsets))


def list_near_miss(answer: str, others: Sequence[str], rng: random.Random) -> str | None:
    """A wrong list close to a list `answer` ("a, b, c"): at even odds its items in another
    order (the question's own order, for a reversal), else one item swapped for an item of
    `others`' lists; None where the answer is no list or neither is possible."""
    items = answer.split(LIST_SEPARATOR)
    if len(items) < 2:
        return None
    reordered = [o for o in _orders(items, rng) if o != items]
    foreign = [item for item in _item_pool(tuple(others)) if item not in items]
    if reordered and (not foreign or rng.random() < 0.5):
        return LIST_SEPARATOR.join(rng.choice(reordered))
    if not foreign:
        return None
    changed = list(items)
    changed[rng.randrange(len(items))] = rng.choice(foreign)
    return LIST_SEPARATOR.join(changed)


@functools.lru_cache(maxsize=8)
def _item_pool(others: tuple[str, ...]) -> tuple[str, ...]:
    """Every item of `others`' lists, once each, sorted: made once per corpus, not per pair
    (the corpus's 4,000 references took 1.2 ms a pair to split)."""
    return tuple(sorted({item for other in others for item in other.split(LIST_SEPARATOR)}))


def _orders(items: list[str], rng: random.Random) -> list[list[str]]:
    """The reversed list and a few shuffles of `items`."""
    shuffles = [rng.sample(items, len(items)) for _ in range(4)]
    return [items[::-1], *shuffles]


def wrong_answer(answer: str, others: Sequence[str], rng: random.Random) -> str:
    """An answer that is not `answer`: an integer's or a list's near miss, else one of
    `others` (other questions' references) that differs; ValueError where there is none."""
    missed = near_miss(answer, rng)
    if missed is None:
        missed = list_near_miss(answer, others, rng)
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
    """Two responses to one question, each right or wrong by its answer (the first is right
    where they differ)."""

    question: str  # the prompt as the critic sees it
    answer: str  # what the critic works out
    said: tuple[str, str]  # each response's answer
    first: str  # the responses as written
    second: str

    @property
    def rights(self) -> tuple[bool, bool]:
        return self.said[0] == self.answer, self.said[1] == self.answer

    def target(self, swapped: bool, letters: Sequence[str], marker: str) -> str:
        """The right critic's text, `second` shown first if `swapped`."""
        shown = list(zip(self.said, self.rights, strict=True))
        return worked_target(self.answer, shown[::-1] if swapped else shown, letters, marker)

    def job(self, key: tuple, aspect: str, description: str) -> PairJob:
        return PairJob(key, self.question, self.first, self.second, aspect, description)


def answer_pair(
    question: str,
    answer: str,
    others: Sequence[str],
    tie: bool,
    rng: random.Random,
    render: Callable[[str], str] = str,
) -> AnswerPair:
    """Right then wrong; on a tie both right or both wrong (two different wrong answers where
    there are two) at even odds; each response `render`ed from its answer."""
    if not tie:
        said = (answer, wrong_answer(answer, others, rng))
    elif rng.random() < 0.5:
        said = (answer, answer)
    else:
        first = wrong_answer(answer, others, rng)
        tries = (wrong_answer(answer, others, rng) for _ in range(8))
        said = (first, next((w for w in tries if w != first), first))
    return AnswerPair(question, answer, said, render(said[0]), render(said[1]))


def is_probe(question: str) -> bool:
    """Whether a question is the gate's (`PROBE_FRACTION` of them, by a hash of its text)."""
    digest = hashlib.sha256(f"probe:{question}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < PROBE_FRACTION


def split(questions: Sequence[Answered], probe: bool) -> list[Answered]:
    """The questions on one side of the probe split."""
    return [q for q in questions if is_probe(q[0]) == probe]


class Labeller:
    """Draws the labelled pairs of an environment's questions, for the corpus and the gate:
    correctness pairs, and style pairs at `style_share` where `filler` is set."""

    def __init__(
        self,
        questions: Sequence[Answered],
        options: VerdictOptions,
        critic: CriticConfig,
        rubric: str,
        render: Callable[[str], str] = str,
    ) -> None:
        self.options, self.render = options, render
        self.pools = {probe: split(questions, probe) for probe in (False, True)}
        self.others = [answer for _, answer in questions]
        self.correct = critic.calibration.aspect
        self.descriptions = {
            self.correct: description_of(rubric, self.correct, "the answer is right"),
            options.style_aspect: description_of(
                rubric, options.style_aspect, "the answer alone, no words before or after it"
            ),
        }

    @property
    def aspects(self) -> tuple[str, ...]:
        return (self.correct, self.options.style_aspect) if self.options.filler else (self.correct,)

    def pair(
        self, rng: random.Random, aspect: str | None = None, tie: bool | None = None, probe=False
    ) -> tuple[str, AnswerPair | FillerPair]:
        """(aspect, pair) on a question of the corpus's side (or the gate's, `probe`)."""
        options = self.options
        if aspect is None:
            style = bool(options.filler) and rng.random() < options.style_share
            aspect = options.style_aspect if style else self.correct
        tie = rng.random() < options.ties if tie is None else tie
        question, answer = rng.choice(self.pools[probe])
        if aspect == self.correct:
            return aspect, answer_pair(question, answer, self.others, tie, rng, self.render)
        said = answer if rng.random() < 0.5 else wrong_answer(answer, self.others, rng)
        pair = filler_pair(question, self.render(said), options.filler, tie, rng, options.filler_at)
        return aspect, pair

    def probes(self, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
        """`per_aspect` labelled pairs and `ties` tie pairs on each aspect, on the gate's
        questions (none where there are none)."""
        if not self.pools[True]:
            return []
        rng = random.Random(f"verdicts:probes:{seed}")
        drawn = [(i, False) for i in range(per_aspect)] + [(i, True) for i in range(ties)]
        jobs = []
        for aspect in self.aspects:
            for index, tie in drawn:
                _, pair = self.pair(rng, aspect, tie, probe=True)
                key = probe_key(aspect, index, tie=tie)
                jobs.append(pair.job(key, aspect, self.descriptions[aspect]))
        return jobs


def with_verdicts(actor, labeller: Labeller, critic: CriticConfig, encode):
    """`actor` (a PairsCorpus) alone where the options mix in no verdicts, else a VerdictCorpus
    around it."""
    if labeller.options.share == 0 and labeller.options.ptx_share == 0:
        return actor
    return VerdictCorpus(actor, labeller, critic, encode)


class VerdictCorpus:
    """An environment's demonstrations and critic verdicts on its labelled pairs, mixed per
    batch (the `Corpus` protocol, selfcritic/envs/base.py)."""

    def __init__(self, actor, labeller: Labeller, critic: CriticConfig, encode) -> None:
        """`actor`: the demonstrations (a PairsCorpus); `encode`: the run's PromptEncoder."""
        self.actor, self.labeller, self.encode = actor, labeller, encode
        self.options = options = labeller.options
        if not labeller.pools[False]:
            raise ValueError("env.verdicts: no training question has an answer to label pairs")
        self.prompter = make_prompter(critic, encode)
        self.letters, self.marker = tuple(critic.verdict_letters), critic.verdict_marker
        self.generative = critic.verdict_mode == "generative"
        marks = encode.tokenizer.convert_tokens_to_ids(list(MARKS))
        self.token_weights = tuple((mark, options.mark_weight) for mark in marks)
        critic_recipe = {
            k: getattr(critic, k)
            for k in ("template", "verdict_letters", "verdict_marker", "verdict_mode")
        }
        recipe = {"verdicts": dataclasses.asdict(options), "critic": critic_recipe}
        recipe["descriptions"] = labeller.descriptions
        self.recipe = actor.recipe | recipe
        self.sources: tuple[Path, ...] = (*actor.sources, Path(__file__), Path(filler.__file__))
        self.batch_size = actor.batch_size

    def verdict(self, rng: random.Random) -> Pair:
        """One critic pair: the prompt's ids and what a right critic writes, then the stop."""
        aspect, pair = self.labeller.pair(rng)
        swapped = rng.random() < 0.5
        first, second = (pair.second, pair.first) if swapped else (pair.first, pair.second)
        description = self.labeller.descriptions[aspect]
        text = self.prompter.prompt(pair.question, first, second, aspect, description)
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
