"""The nano environments' options (`env=nano_world`, `env=nano_arithmetic`), under `env.*`.

Values are checked by the same field rules as the run's settings (`setting(..., ge=...)`), with
keys `env.<field>`; a key that is not a field fails when the config is composed or loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfcritic.config import setting


@dataclass
class NanoArithmeticOptions:
    """Additions "Q: 3+4=\\nA:" -> "7", all verifiable (the smoke run's task)."""

    name: str = "nano_arithmetic"
    max_operand: int = setting(9, ge=0)  # operands drawn from 0..max_operand


@dataclass
class NanoCorpusOptions:
    """The supervised pairs of the warm-start and of RL's PTX (selfcritic/envs/nano/corpus.py):
    actor answers and critic verdicts, with defects at these rates."""

    # actor answers per warm-start step (arithmetic and repeat, as the tasks mix them)
    actor_examples: int = setting(32, ge=0)
    # critic verdicts per warm-start step (half correctness, half style aspects)
    critic_examples: int = setting(32, ge=0)
    # curriculum: correctness verdicts join after this fraction of the steps (from the start
    # they stalled all verdict learning: docs/nano-world.md)
    correctness_after: float = setting(0.4, ge=0, le=1)
    # share of minimal style pairs (only the judged defect differs; all minimal, the worse
    # response is always the longer one and the critic learns brevity)
    minimal_pairs: float = setting(0.5, ge=0, le=1)
    # share of critic pairs that tie on the judged aspect (the other defects drawn apart): a
    # right critic names the first shown, and its two orders cancel (docs/nano-world.md)
    ties: float = setting(0.3, ge=0, le=1)
    # share of the style verdicts on on_task, the rest split evenly over the three defects;
    # None: the four aspects alike
    on_task_share: float | None = setting(None, ge=0, le=1)
    # weight of the verdicts' marks (+ and -) in the language-model loss, in the warm-start and
    # in RL's PTX (1: like every other target token)
    mark_weight: float = setting(1.0, gt=0)
    # verdict form: the computed answer restated beside each response's on correctness and
    # on_task (" =19 X18=19- Y19=19+ #Y"), so each mark compares strings side by side
    side_by_side: bool = False
    wrong: float = setting(0.5, ge=0, le=1)  # share of wrong arithmetic answers in actor data
    praise: float = setting(0.35, ge=0, le=1)  # share of repeat answers opening with praise
    meta: float = setting(0.35, ge=0, le=1)  # ... with meta-commentary
    filler: float = setting(0.35, ge=0, le=1)  # ... with filler after the answer
    claim: float = setting(0.15, ge=0, le=1)  # share of all answers ending with a claim


@dataclass
class NanoWorldOptions:
    """The nano world (docs/nano-world.md): verifiable sums and rubric-only repeat tasks."""

    name: str = "nano_world"
    max_operand: int = setting(9, ge=0)  # arithmetic operands drawn from 0..max_operand
    rubric_only_share: float = setting(0.5, ge=0, le=1)  # share of repeat (rubric-only) tasks
    # share of questions held out (by a hash of each: the same split for every run)
    heldout_fraction: float = setting(0.2, gt=0, lt=1)
    # rubric-only tasks carry the oracle's answer too (the oracle-reward ablation, with
    # reward.verifier=nano_oracle)
    oracle_references: bool = False
    repeat_tasks: int = setting(64, ge=0)  # held-out suite: rubric-only tasks
    pairs_per_aspect: int = setting(48, ge=0)  # held-out suite: frozen critic pairs per aspect
    # held-out suite: frozen correctness pairs at the first and the final evaluation (and in
    # `python -m selfcritic.eval`), the first `pairs_per_aspect` of them the usual ones: a
    # goal of 90% agreement needs hundreds (48 pairs: a standard error of about 4 points)
    final_correct_pairs: int = setting(400, ge=0)
    corpus: NanoCorpusOptions = field(default_factory=NanoCorpusOptions)
