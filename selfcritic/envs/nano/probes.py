"""The nano world's probe pairs for the aspect gate (selfcritic/critic/gate.py,
`critic.gate.source=env`).

Labelled pairs on each rubric-only aspect (no_praise, no_meta, no_filler, on_task), from
training-split questions only, so the gate never sees what the held-out suite judges. They are
contrast pairs, as in the held-out suite: the better response carries another defect, so a
critic that only prefers short or defect-free answers is at chance on them. Optionally tie pairs
too (`tie_pair`: both responses meet the aspect or both fail it, the other defects drawn apart).
Responses are drawn at the warm-start's default defect rates. Correctness has no probes: the
verifier calibrates it.
"""

from __future__ import annotations

import random

from selfcritic.critic.gate import probe_key
from selfcritic.critic.judge import PairJob
from selfcritic.envs.nano.options import NanoWorldOptions
from selfcritic.envs.nano.world import (
    REPEAT_ASPECTS,
    DefectRates,
    Task,
    labelled_pair,
    random_word,
    repeat_question,
    tie_pair,
)


def nano_probes(cfg: NanoWorldOptions, per_aspect: int, ties: int, seed: int) -> list[PairJob]:
    rng = random.Random(f"nano_probes:{seed}")
    rates = DefectRates()
    jobs = []
    for aspect in REPEAT_ASPECTS:
        for index in range(per_aspect):
            pair = labelled_pair(_task(cfg, rng), aspect, rates, rng, minimal=False)
            jobs.append(pair.job(key=probe_key(aspect, index)))
    tie_rng = random.Random(f"nano_probes:ties:{seed}")  # the labelled probes stay as they were
    for aspect in REPEAT_ASPECTS:
        for index in range(ties):
            pair = tie_pair(_task(cfg, tie_rng), aspect, rates, tie_rng)
            jobs.append(pair.job(key=probe_key(aspect, index, tie=True)))
    return jobs


def _task(cfg: NanoWorldOptions, rng: random.Random) -> Task:
    word = random_word(rng, cfg.heldout_fraction, heldout=False)
    return Task(repeat_question(word), word, verifiable=False)
