"""Prompt sources, found by name: each yields the prompts of one training step.

A `Prompt` carries its text and, for verifiable tasks, the reference answer the verifier checks
(the critic never sees it). Sources are pure functions of (seed, step, draw), so a resumed run
sees the same prompts; `draw` > 0 asks for the refills of dynamic sampling. The nano world's
source (with held-out splits) is in selfcritic/data/nano_world.py. Left out: jsonl/parquet
sources through `datasets`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from selfcritic.config import DataConfig
from selfcritic.envs.base import Prompt
from selfcritic.preflight import require_registered
from selfcritic.registry import Registry

__all__ = ["Prompt", "PromptSource", "get_source", "register_source"]

PromptSource = Callable[[DataConfig, int, int], list[Prompt]]  # (config, step, draw)
PROMPT_SOURCES: Registry[PromptSource] = Registry("prompt source")
register_source = PROMPT_SOURCES.register
get_source = PROMPT_SOURCES.get


@register_source("nano_arithmetic")
def nano_arithmetic(cfg: DataConfig, step: int, draw: int = 0) -> list[Prompt]:
    """Additions of operands in 0..max_operand: "Q: 3+4=\\nA:" with reference "7"."""
    rng = random.Random(f"{cfg.seed}:{step}" + (f":{draw}" if draw else ""))
    prompts = []
    for _ in range(cfg.prompts_per_step):
        a, b = rng.randint(0, cfg.max_operand), rng.randint(0, cfg.max_operand)
        prompts.append(Prompt(text=f"Q: {a}+{b}=\nA:", reference=str(a + b)))
    return prompts


require_registered(PROMPT_SOURCES, "data.source", __name__)


from selfcritic.data import nano_world as _nano_world  # noqa: E402, F401  (registers its source)
