"""The nano world as environments: `nano_world` (sums and rubric-only repeat tasks, with its
held-out suite, warm-start corpus and critic probes) and `nano_arithmetic` (sums only, the smoke
run's task). Everything the nano world is lives in this package (docs/nano-world.md): tasks and
splits (world.py) and their stock phrases (phrases.py, which the nano model's tokenizer keeps
whole: `model.phrases`), the supervised corpus (corpus.py), the gate's probes (probes.py), the
held-out suite (suite.py) and the options (options.py).
"""

from __future__ import annotations

import random

from selfcritic.config import Config
from selfcritic.envs.base import Prompt, SingleTurn
from selfcritic.envs.nano.options import NanoArithmeticOptions, NanoWorldOptions
from selfcritic.envs.registry import register_environment
from selfcritic.preflight import Problems


@register_environment("nano_arithmetic", NanoArithmeticOptions)
class NanoArithmetic(SingleTurn):
    """Additions of operands in 0..max_operand: "Q: 3+4=\\nA:" with reference "7"; no held-out
    split."""

    verifier, rubric = "exact_number", "nano"

    def __init__(self, options: NanoArithmeticOptions, cfg: Config) -> None:
        self.name, self.options, self.seed = options.name, options, cfg.data.seed

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        rng = random.Random(f"{self.seed}:{step}" + (f":{draw}" if draw else ""))
        prompts = []
        for _ in range(count):
            a, b = (
                rng.randint(0, self.options.max_operand),
                rng.randint(0, self.options.max_operand),
            )
            prompts.append(Prompt(text=f"Q: {a}+{b}=\nA:", reference=str(a + b)))
        return prompts

    def held_out(self) -> list[Prompt]:
        return []


@register_environment("nano_world", NanoWorldOptions)
class NanoWorld(SingleTurn):
    """The nano world (world.py): prompts of the training split, its held-out suite, corpus
    and probes."""

    verifier, rubric = "exact_number", "nano_math"  # repeat prompts name nano_style

    def __init__(self, options: NanoWorldOptions, cfg: Config) -> None:
        from selfcritic.envs.nano.suite import HEADLINE, REPORT_CURVES, REPORT_METRICS

        self.name, self.options, self.cfg = options.name, options, cfg
        self.headline = HEADLINE
        self.report_metrics, self.report_curves = REPORT_METRICS, REPORT_CURVES

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        from selfcritic.envs.nano.world import draw_task

        rng = random.Random(f"nano_world:{self.cfg.data.seed}:{step}:{draw}")
        references = self.options.oracle_references
        return [draw_task(self.options, rng).prompt(references) for _ in range(count)]

    def held_out(self) -> list[Prompt]:
        from selfcritic.envs.nano.world import heldout_tasks

        arithmetic, repeat = heldout_tasks(self.options, self.options.repeat_tasks)
        return [task.prompt() for task in arithmetic + repeat]

    def evaluate(self, engine, tokenizer, seed: int, final: bool = True) -> dict[str, float]:
        """`final`: a run's first or final evaluation, or a checkpoint's (the larger pair set)."""
        from selfcritic.envs.nano.suite import evaluate_nano

        return evaluate_nano(engine, tokenizer, self.cfg, self.options, seed, final)

    def corpus(self, tokenizer):
        from selfcritic.envs.nano.corpus import WarmStartData

        return WarmStartData(self.options, self.cfg.critic, tokenizer)

    def probes(self, per_aspect: int, ties: int, seed: int):
        from selfcritic.envs.nano.probes import nano_probes

        return nano_probes(self.options, per_aspect, ties, seed)

    def check(self, problems: Problems, key: str) -> None:
        """The corpus has pairs to give; side-by-side verdicts fit `critic.max_tokens`."""
        from selfcritic.envs.nano.world import side_by_side_verdict_tokens

        corpus, cfg = self.options.corpus, self.cfg
        problems.require(
            corpus.actor_examples + corpus.critic_examples >= 1,
            f"{key}.corpus.actor_examples",
            "actor_examples + critic_examples must be at least 1",
        )
        needed = side_by_side_verdict_tokens(self.options.max_operand)
        problems.require(
            not corpus.side_by_side or cfg.critic.max_tokens >= needed,
            "critic.max_tokens",
            f"{key}.corpus.side_by_side verdicts take up to {needed} tokens at "
            f"{key}.max_operand={self.options.max_operand}; set critic.max_tokens={needed} or more",
        )
