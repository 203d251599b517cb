"""Critic prompts: the question, two delimited responses and one rubric aspect.

The format is short on purpose (a character-level nano model pays for every character):

    C: <question>
    X: <response one>
    Y: <response two>
    <aspect name>->

and the critic answers with the letter of the better response. Delimiters inside a response are
neutralised: newlines become spaces, so a response cannot open a fake "Y:" line. The critic never
sees a reference answer. Left out: configurable templates (the critic issue adds them).
"""

from __future__ import annotations

VERDICT_LETTERS = ("X", "Y")


def neutralise(response: str) -> str:
    """One line, no delimiter can be forged."""
    return " ".join(response.split())


def pair_prompt(question: str, first: str, second: str, aspect: str) -> str:
    """The critic prompt comparing `first` (as X) with `second` (as Y) on `aspect`."""
    return f"C: {neutralise(question)}\nX: {neutralise(first)}\nY: {neutralise(second)}\n{aspect}->"


def parse_verdict(text: str) -> str | None:
    """'X' or 'Y' when the first non-space character is one of them, else None (invalid)."""
    stripped = text.strip()
    if stripped[:1] in VERDICT_LETTERS:
        return stripped[0]
    return None
