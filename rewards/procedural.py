"""`reasoning_gym`: a reasoning-gym task's own `score_answer` (env=reasoning_gym).

The reference is JSON naming the entry (task, options, seed, size, index; selfcritic/envs/
reasoning_gym_env.py); the entry is rebuilt from it (cheap: the package generates entry i from
the seed and i) and the answer scored by the task. The answer is the text inside the last
<TAG>...</TAG> when the reference names an `answer_tag` (none: score 0), else the whole
completion, stripped.
"""

from __future__ import annotations

import functools
import json
import re

from rewards.base import RewardResult
from rewards.registry import register_verifier


@functools.lru_cache(maxsize=64)
def _dataset(task: str, options: str, seed: int, size: int):
    import reasoning_gym  # heavy (sympy): only where this verifier runs

    return reasoning_gym.create_dataset(task, size=size, seed=seed, **json.loads(options))


def answer_of(completion: str, tag: str | None) -> str | None:
    """The answer in `completion`: inside the last <tag>...</tag>, or all of it (stripped)."""
    if tag is None:
        return completion.strip()
    found = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", completion, re.DOTALL)
    return found[-1].strip() if found else None


@register_verifier("reasoning_gym")
def reasoning_gym_score(completion: str, reference: str) -> RewardResult:
    """The task's own score of the completion's answer, in [0, 1]."""
    spec = json.loads(reference)
    dataset = _dataset(
        spec["task"], json.dumps(spec["options"], sort_keys=True), spec["seed"], spec["size"]
    )
    answer = answer_of(completion, spec.get("answer_tag"))
    if answer is None:
        return RewardResult(0.0, {"reason": f"no <{spec['answer_tag']}> answer"})
    score = dataset.score_answer(answer, dataset[spec["index"]])
    return RewardResult(float(score), {"task": spec["task"]})
