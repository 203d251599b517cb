"""A style defect a hidden check can count, for any environment with answers: filler phrases.

The generic warm-start's second lesson (selfcritic/envs/verdicts.py has the first, correctness):
a share of the demonstrations opens with one of the `filler` phrases before the answer, or closes
with one after it (`verdicts.filler_at`), so the policy starts with a habit the verifier does not
see (it reads the answer alone, e.g. inside an answer tag) and only the critic's style aspect can
take away. Where a small model copies worse from further away, an opening phrase also costs
accuracy, and then a strong enough policy gradient drops it with no critic; a closing phrase,
written after the answer, cannot change the answer (docs/word-reversal-log.md, probes 10-13).
The critic learns that aspect from pairs of one response with and without a phrase (ties: both
with or both without), the target its bare marks, " X+ Y- #X": a pattern a nano critic learns
at once, where correctness needs the worked form (../shared/notes/nano-feasibility.md). The
hidden check, `has_filler`, is whether a response writes anything before its answer (or after
it): the evaluation counts it, the critic never sees it. Left out: defects other than one
phrase at either end.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from selfcritic.critic.judge import PairJob

MARKS = ("+", "-")  # written after each response: without filler, or with it
PLACES = ("start", "end")  # where a phrase goes: before the answer, or after it


def with_filler(
    response: str, phrases: Sequence[str], rng: random.Random, at: str = "start"
) -> str:
    """`response` opened (`at` "start") or closed ("end") by one of `phrases`."""
    phrase = rng.choice(phrases)
    return f"{phrase}{response}" if at == "start" else f"{response}{phrase}"


def opens_with_filler(response: str, answer_start: str) -> bool:
    """The hidden check of an opening phrase: text other than spaces before `answer_start` (an
    answer tag's opening), or no answer at all."""
    before, found, _ = response.partition(answer_start)
    return not found or bool(before.strip())


def closes_with_filler(response: str, answer_end: str) -> bool:
    """The hidden check of a closing phrase: text other than spaces after `answer_end` (an
    answer tag's closing), or no closed answer at all."""
    _, found, after = response.partition(answer_end)
    return not found or bool(after.strip())


def has_filler(response: str, tag: str, at: str) -> bool:
    """The hidden check for phrases placed `at` the start or the end of answers in `tag`."""
    if at == "start":
        return opens_with_filler(response, f"<{tag}>")
    return closes_with_filler(response, f"</{tag}>")


@dataclass(frozen=True)
class FillerPair:
    """One response to a question, shown without filler (`first`) and with it (`second`), or
    (a tie) both the same way."""

    question: str
    first: str
    second: str
    clean: tuple[bool, bool]  # whether each is without filler

    def target(self, swapped: bool, letters: Sequence[str], marker: str) -> str:
        """The right critic's bare marks, `second` shown first if `swapped`, then the letter
        (the first shown on a tie, so that the two orders cancel)."""
        shown = self.clean[::-1] if swapped else self.clean
        marks = "".join(
            f" {letter}{MARKS[0] if ok else MARKS[1]}"
            for letter, ok in zip(letters, shown, strict=True)
        )
        winner = letters[1] if shown[1] and not shown[0] else letters[0]
        return f"{marks} {marker}{winner}"

    def job(self, key: tuple, aspect: str, description: str) -> PairJob:
        return PairJob(key, self.question, self.first, self.second, aspect, description)


def filler_pair(
    question: str,
    response: str,
    phrases: Sequence[str],
    tie: bool,
    rng: random.Random,
    at: str = "start",
) -> FillerPair:
    """`response` clean then with a phrase (placed `at` its start or end); on a tie both clean
    or both with (two phrases where there are two) at even odds."""
    if not tie:
        filled = with_filler(response, phrases, rng, at)
        return FillerPair(question, response, filled, (True, False))
    if rng.random() < 0.5:
        return FillerPair(question, response, response, (True, True))
    first, second = (with_filler(response, phrases, rng, at) for _ in range(2))
    return FillerPair(question, first, second, (False, False))
