"""Reasoning blocks: the final part of a response that thinks first (`<think>...</think>`).

An environment whose options set `reasoning_tags: [OPEN, CLOSE]` (every built-in one over real
data has the option) has each response's reasoning block stripped before the verifier and the
critic see it: they see what follows the last CLOSE, stripped of surrounding whitespace. A
response that never closes its block (cut by the token budget while thinking, or one that
ignored the format) has no final part: both see "" and it is counted (`reward/no_final_answer`,
the share of a step's responses). The policy still learns on every token it wrote, the block
included. Left out: several interleaved blocks (only the text after the last CLOSE counts) and
templates that put the block in a separate message field.
"""

from __future__ import annotations

from selfcritic.config import ConfigError, keyed


def final_answer(text: str, tags: tuple[str, str] | list[str] | None) -> str | None:
    """The part of `text` the verifier and critic see: after the last closing tag, stripped;
    None when `tags` are set and the block was never closed. Without tags, `text` itself."""
    if not tags:
        return text
    closing = tags[1]
    if closing not in text:
        return None
    return text.rsplit(closing, 1)[1].strip()


def check_tags(tags) -> tuple[str, str] | None:
    """`env.reasoning_tags` as a pair of non-empty strings, or None; ConfigError otherwise."""
    if tags is None:
        return None
    if len(tags) != 2 or not all(isinstance(t, str) and t for t in tags):
        raise ConfigError(
            keyed("env.reasoning_tags", f"must be [OPEN, CLOSE], e.g. [<think>, </think>]: {tags}")
        )
    return tags[0], tags[1]


def answer_of(env, trajectory) -> str | None:
    """What the verifier judges of an episode of `env`: its last turn where the environment
    says so (`answer_is_last_turn`: a tool episode's final answer), else all it wrote; then the
    final part after a reasoning block (`reasoning_tags`; None: there is none)."""
    last_only = getattr(env, "answer_is_last_turn", False) and trajectory.texts
    if last_only and trajectory.finish_reason in ("turns", "length"):
        return None  # out of turns or room: its last turn was a call, not an answer
    text = trajectory.texts[-1] if last_only else trajectory.text
    return final_answer(text, getattr(env, "reasoning_tags", None))
