"""selfcritic's self-critic and verifier as reward functions of TRL's GRPOTrainer (trl 1.16).

The real GRPOTrainer trains the nano model for 2 steps with `SelfCriticReward` and
`VerifierReward` as its rewards; the test records what TRL computed at each step and checks that
the critic's scores reached the advantages (by TRL's formula, worked out here), that they differ
within a prompt's group, and that a direct call of selfcritic's `SelfCritic` on the same
completions with the same weights gives the same scores.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewards.base import Rubric, RubricAspect
from rewards.registry import load_rubric
from selfcritic.config import CriticConfig
from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
from selfcritic.critic.self_critic import SelfCritic
from selfcritic.integrations.trl import (
    STATE_FILE,
    TESTED_TRL,
    SelfCriticCallback,
    SelfCriticReward,
    VerifierReward,
    completion_text,
    question_text,
)
from selfcritic.rollout.hf_engine import TransformersEngine
from selfcritic.rollout.types import Sample

QUESTIONS = ["3+4=", "12+9=", "5+5=", "8+1="]
ANSWERS = ["7", "21", "10", "9"]
G = 4  # num_generations


def _trainer(tmp_path, nano_model_path, critic, reward_funcs, groups_per_process=2):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    class Recording(GRPOTrainer):
        """Keeps, per generation, the weights it sampled and judged with and TRL's output."""

        recorded: list = []

        def _generate_and_score_completions(self, inputs):
            weights = copy.deepcopy(self.model.state_dict())
            out = super()._generate_and_score_completions(inputs)
            self.recorded.append((weights, critic.last, critic.last_seed, out))
            return out

    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    model = AutoModelForCausalLM.from_pretrained(str(nano_model_path), dtype=torch.float32)
    rows = [
        {"prompt": tokenizer.bos_token + q, "answer": a}
        for q, a in zip(QUESTIONS, ANSWERS, strict=True)
    ]
    config = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=int(groups_per_process * G),
        num_generations=G,
        max_completion_length=6,
        temperature=1.0,
        beta=0.0,
        learning_rate=1e-3,
        max_steps=2,
        shuffle_dataset=False,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Recording(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.recorded = []
    critic.attach(trainer)
    return trainer, tokenizer


def test_self_critic_scores_reach_trl_advantages(tmp_path, nano_model_path):
    import trl

    assert trl.__version__ == TESTED_TRL
    # a check random completions pass about 60% of the time: groups of mixed scores, so the
    # verifier's part of the advantage varies and the critic meets calibration pairs
    pattern = {"pattern": "[a-m]", "search": True}
    verifier = VerifierReward("format_regex", reference_key="answer", options=pattern, workers=1)
    critic = SelfCriticReward(rubric="nano", verifier=verifier)
    trainer, tokenizer = _trainer(tmp_path, nano_model_path, critic, [critic, verifier])
    try:
        trainer.train()
    finally:
        verifier.close()
    assert len(trainer.recorded) == 2
    for step, (weights, result, seed, out) in enumerate(trainer.recorded):
        drawn = slice(2 * step, 2 * step + 2)  # the dataset in order: two prompts a step
        scores = torch.tensor([s for group in result.scores for s in group])
        assert len(result.scores) == 2 and all(len(g) == G for g in result.scores)
        for group in result.scores:  # the critic tells the completions of one prompt apart
            assert max(group) - min(group) > 1e-3
            assert sum(group) == pytest.approx(0.0, abs=1e-6)  # centred per group
        # TRL's advantage: the summed rewards less their group mean, over the group's std
        texts = [text for _, text in _completions(tokenizer, out)]
        verified = verifier.scores(texts, [a for a in ANSWERS[drawn] for _ in range(G)])
        for g in range(2):
            total = [float(scores[g * G + i]) + verified[g * G + i] for i in range(G)]
            mean, std = statistics.mean(total), statistics.stdev(total)
            expected = [(t - mean) / (std + 1e-4) for t in total]
            assert out["advantages"][g * G : (g + 1) * G].tolist() == pytest.approx(
                expected, abs=1e-4
            )
        questions = [tokenizer.bos_token + q for q in QUESTIONS[drawn]]
        _check_direct_call(nano_model_path, tokenizer, weights, result, seed, out, questions)
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"critic/invalid_rate", "critic/position_consistency", "critic/agreement"} <= logged
    assert "reward/verifier_failed" in logged
    saved = tmp_path / "trl" / "checkpoint-2" / STATE_FILE
    state = pickle.loads(saved.read_bytes())
    assert state["anchor"] == critic.callback.critic.state()["anchor"] != []


def _check_direct_call(nano_model_path, tokenizer, weights, result, seed, out, questions):
    """selfcritic's SelfCritic, called directly on TRL's completions with the weights that
    judged them, scores them as the reward did."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(nano_model_path), dtype=torch.float32)
    model.load_state_dict(weights)
    model.eval()
    completions = _completions(tokenizer, out)
    groups = [
        [Sample((), ids, text, (), "stop", 0) for ids, text in completions[g * G : (g + 1) * G]]
        for g in range(2)
    ]
    direct = SelfCritic(
        CriticConfig(),
        load_rubric("nano"),
        prompt_encoder(tokenizer),
        verdict_token_ids(tokenizer, ["X", "Y"]),
        context_len=model.config.max_position_embeddings,
    )
    with torch.no_grad():
        again = direct.score(questions, groups, TransformersEngine.around(model, tokenizer), seed)
    for mine, theirs in zip(again.scores, result.scores, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)


def _completions(tokenizer, out) -> list[tuple[tuple, str]]:
    """(ids, text) of each completion TRL generated: its ids up to the mask's end, decoded as
    TRL decodes them for reward functions."""
    rows = zip(out["completion_ids"].tolist(), out["completion_mask"].tolist(), strict=True)
    ids = [tuple(t for t, kept in zip(row, mask, strict=True) if kept) for row, mask in rows]
    return [(i, tokenizer.decode(list(i), skip_special_tokens=True)) for i in ids]


def test_critic_state_read_back_on_resume(tmp_path):
    """A callback whose trainer resumes at step N reads the state saved in checkpoint-N."""
    from transformers import TrainerState, TrainingArguments

    class Holder:
        def __init__(self) -> None:
            self.loaded = None

        def state(self):
            return {"anchor": ["pair"], "buffer": [], "excluded": set(), "gate": {}}

        def load_state(self, state):
            self.loaded = state

    saving, resuming = SelfCriticCallback(), SelfCriticCallback()
    saving.critic, resuming.critic = Holder(), Holder()
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state = TrainerState(global_step=3)
    saving.on_save(args, state, None)
    resuming.on_train_begin(args, TrainerState(global_step=0), None)
    assert resuming.critic.loaded is None  # a fresh run reads nothing
    resuming.on_train_begin(args, state, None)
    assert resuming.critic.loaded["anchor"] == ["pair"]


def test_texts_the_critic_sees():
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "sure?"}]},
    ]
    assert question_text(conversation) == "2+2?\n\nsure?"
    assert question_text("plain") == "plain"
    turns = [
        {"role": "assistant", "content": "calling add"},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "4"},
    ]
    assert completion_text(turns) == "calling add\n[tool] 4\n4"


def test_bad_settings_are_refused_with_the_key():
    from selfcritic.config import CalibrationConfig, GateConfig

    rl = CriticConfig(calibration=CalibrationConfig(form="rl"))
    with pytest.raises(ValueError, match="calibration.form='rl'"):
        SelfCriticReward(rubric="nano", critic=rl)
    with pytest.raises(ValueError, match="gate.source='env'"):
        SelfCriticReward(rubric="nano", critic=CriticConfig(gate=GateConfig(source="env")))
    with pytest.raises(KeyError, match="unknown rubric"):
        SelfCriticReward(rubric="no_such_rubric")
    custom = Rubric("mine", (RubricAspect("short", "the answer is short"),))
    assert SelfCriticReward(rubric=custom).rubric is custom
    with pytest.raises(RuntimeError, match="attach"):
        SelfCriticReward(rubric="nano")(prompts=["a"], completions=["b"])
    verifier = VerifierReward("exact_number", reference_key="solution", workers=0)
    with pytest.raises(KeyError, match="'solution'.*columns: \\['answer'\\]"):
        verifier(prompts=["1+1="], completions=["2"], answer=["2"])
    assert verifier(prompts=["1+1=", "x"], completions=["2", "3"], solution=["2", None]) == [
        1.0,
        None,
    ]


def test_groups_spanning_two_processes(tmp_path, nano_model_path):
    """Two processes (torchrun, gloo on CPU), one prompt's group of 4 split 2 + 2 between them:
    each process judges the whole gathered group, both judge it alike, and each returns its own
    slice, which TRL's advantages then carry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).with_name("trl_two_processes.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(script.parent), *sys.path]))
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(port), str(script), str(nano_model_path), str(tmp_path)],
        check=True, timeout=600, env=env,
    )  # fmt: skip
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # steps
    for first, second in zip(*ranks, strict=True):
        assert first["judged"] == second["judged"]  # one gathered group, judged alike
        (group,) = first["judged"]
        assert len(group) == G and len(first["returned"]) == len(second["returned"]) == G // 2
        assert first["returned"] + second["returned"] == group  # each its own slice
        mean, std = statistics.mean(group), statistics.stdev(group)
        expected = [(s - mean) / (std + 1e-4) for s in group]
        assert first["advantages"] + second["advantages"] == pytest.approx(expected, abs=1e-4)
