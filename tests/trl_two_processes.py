"""Run by tests/test_trl_bridge.py under torchrun: GRPOTrainer with the self-critic on two
processes, one group of 4 a step split between them; each rank writes what it judged, what the
reward returned and its advantages to OUT/rank{R}.json. Arguments: MODEL_PATH OUT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_trl_bridge import _trainer

from selfcritic.integrations.trl import SelfCriticReward


def main() -> None:
    model_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    critic = SelfCriticReward(rubric="nano")
    returned = []

    def self_critic(**kwargs):
        scores = critic(**kwargs)
        returned.append(scores)
        return scores

    trainer, _ = _trainer(out, model_path, critic, [self_critic], groups_per_process=0.5)
    trainer.train()
    rank = trainer.accelerator.process_index
    steps = [
        {"judged": result.scores, "returned": mine, "advantages": out_["advantages"].tolist()}
        for (_, result, _, out_), mine in zip(trainer.recorded, returned, strict=True)
    ]
    (out / f"rank{rank}.json").write_text(json.dumps(steps))


if __name__ == "__main__":
    main()
