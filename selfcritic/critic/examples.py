"""What closed-loop calibration hands the learner: critic prompts with target verdicts.

The learner's calibration loss is the cross-entropy between the critic's distribution over the
verdict tokens at the verdict position (the next token after `prompt_ids`), renormalised over
`verdict_token_ids`, and `target_probs`: the same distribution the probability-mode reward reads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CriticExample:
    prompt_ids: tuple[int, ...]  # the critic prompt, up to and including the verdict cue
    verdict_token_ids: tuple[int, ...]  # e.g. the ids of "X" and "Y"
    target_probs: tuple[float, ...]  # over verdict_token_ids, summing to 1
    weight: float = 1.0
