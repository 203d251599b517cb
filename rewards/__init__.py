"""Verifiable rewards and rubrics: the user's plug-in point.

A verifier is a function `(completion, reference) -> RewardResult` registered by name with
`@register_verifier("name")`; a module dropped into this package is imported by
`registry.discover()` and its verifiers become selectable as `reward.verifier=name`. Rubrics are
YAML files in `rewards/rubrics/` (name, aspects with description, weight, mandatory).
"""

from rewards.base import RewardResult, Rubric, RubricAspect
from rewards.registry import get_verifier, load_rubric, register_verifier

__all__ = [
    "RewardResult",
    "Rubric",
    "RubricAspect",
    "get_verifier",
    "load_rubric",
    "register_verifier",
]
