"""Format checks and Kimi K2's token-budget control.

`format_regex`: 1.0 when the completion matches a configured regular expression (fully, or
anywhere with `search: true`). `apply_budget`: a response over its task's token budget is cut
to the budget and its reward lowered by a configured penalty (K2, section 3.3: budget control).
"""

from __future__ import annotations

import re

from rewards.base import RewardResult
from rewards.registry import register_verifier


@register_verifier("format_regex")
def format_regex(
    completion: str, reference: str, pattern: str = r"\s*\S.*", search: bool = False
) -> RewardResult:
    """1.0 when `pattern` matches the whole completion (or any part of it with `search`)."""
    regex = re.compile(pattern, re.DOTALL)
    found = regex.search(completion) if search else regex.fullmatch(completion)
    return RewardResult(float(found is not None), {})


def apply_budget(
    token_ids: list[int], finished: bool, budget: int | None, penalty: float
) -> tuple[list[int], float]:
    """(tokens cut to the budget, penalty to subtract). A response is over budget when it is
    longer than the budget, or was cut by the engine (not `finished`) at the budget or beyond."""
    if budget is None:
        return token_ids, 0.0
    over = len(token_ids) > budget or (not finished and len(token_ids) >= budget)
    return (token_ids[:budget], penalty) if over else (token_ids, 0.0)
