"""The same-compute supervised baseline (benchmarks/sft_baseline.py, selfcritic/warmstart.py
`continue_supervised`): the RL stage's time read right, the step count it buys, and a
continued warm-start that trains on the RL stage's rates."""

import dataclasses
import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from selfcritic.config import Config, OptimConfig
from selfcritic.warmstart import continue_supervised

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from sft_baseline import rl_seconds, steps_in  # noqa: E402


def test_the_rl_stage_is_the_steps_time_less_their_evaluations(tmp_path):
    records = [
        {"step": 0, "eval/accuracy": 0.5},  # the evaluation before the first step: no step time
        {"step": 1, "time/step": 10.0},
        {"step": 2, "time/step": 12.0, "time/eval": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rl_seconds(tmp_path) == 10.0 + (12.0 - 4.0)
    # the warm-start's pace: 400 steps in 200 s is 0.5 s a step, so 18 s buy 36 steps
    assert steps_in(18.0, {"loss": [1.0] * 400, "seconds": 200.0}) == 36
    assert steps_in(0.1, {"loss": [1.0] * 400, "seconds": 200.0}) == 1  # never none


class OneAnswer:
    """A corpus of one demonstration: after the prompt "Q", the answer "ab"."""

    token_weights = ()

    def __init__(self, tokenizer) -> None:
        ids = tokenizer("Q ab", add_special_tokens=False).input_ids
        self.pair = (tuple(ids[:1]), tuple(ids[1:]) + (tokenizer.eos_token_id,))

    def warm_start_batch(self, rng: random.Random, step: int, steps: int):
        return (self.pair,) * 4


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(model_dir.glob("*.safetensors"))))


def test_the_continued_warm_start_trains_on_the_rl_rates(tmp_path, nano_model_path):
    from transformers import AutoTokenizer

    corpus = OneAnswer(AutoTokenizer.from_pretrained(str(nano_model_path)))
    cfg = Config()
    cfg.warmstart.muon_lr = cfg.warmstart.adamw_lr = 0.0  # not the warm-start's rates
    cfg.trainer.lr_schedule = "cosine"
    history = continue_supervised(cfg, corpus, nano_model_path, tmp_path / "trained", 8, seed=0)
    assert len(history["loss"]) == 8 and history["loss"][-1] < history["loss"][0] / 2
    assert (tmp_path / "trained" / "tokenizer_config.json").exists()  # a loadable checkpoint
    # the RL stage's rates at zero: no weight moves (the routers' balancing biases follow the
    # experts' loads at their own rate, not the optimizer's)
    cfg = dataclasses.replace(cfg, optim=OptimConfig(muon_lr=0.0, adamw_lr=0.0))
    continue_supervised(cfg, corpus, nano_model_path, tmp_path / "still", 2, seed=0)
    before, after = weights(nano_model_path), weights(tmp_path / "still")
    learned = [k for k in before if not k.endswith("e_score_correction_bias")]
    assert len(learned) > 20 and all(torch.equal(before[k], after[k]) for k in learned)
