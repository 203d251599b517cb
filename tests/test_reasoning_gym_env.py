"""`env=reasoning_gym`: a reasoning-gym task by name, scored by the task's own `score_answer`.

Prompts reproducible from the seed and never among the held-out questions, the verifier against
the package's own answers, bad names and options refused before any work, and a task trained for
2 steps then evaluated by the evaluation CLI.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import reasoning_gym
from cli_runs import evaluate_checkpoint, train_two_steps
from hydra import compose, initialize_config_dir

from rewards.procedural import answer_of, reasoning_gym_score
from selfcritic.config import Config, ConfigError
from selfcritic.envs.registry import build_environment
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config

SMALL = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def env_of(**options):
    return build_environment(
        {"name": "reasoning_gym", "task": "basic_arithmetic"} | options, Config()
    )


def entry_of(reference: str) -> dict:
    spec = json.loads(reference)
    dataset = reasoning_gym.create_dataset(
        spec["task"], size=spec["size"], seed=spec["seed"], **spec["options"]
    )
    return dataset[spec["index"]]


def test_prompts_are_reproducible_and_never_held_out():
    env = env_of(options=SMALL, heldout_size=50)
    prompts = env.prompts(step=3, draw=0, count=64)
    assert [p.text for p in prompts] == [
        p.text for p in env_of(options=SMALL, heldout_size=50).prompts(3, 0, 64)
    ]
    assert env.prompts(4, 0, 8) != env.prompts(3, 0, 8)
    held = {p.text for p in env.held_out()}
    assert len(env.held_out()) == 50 and not held & {p.text for p in prompts}
    assert all(p.text.startswith("Calculate ") for p in prompts)


def test_the_verifier_is_the_tasks_own_score():
    env = env_of(options=SMALL)
    for prompt in env.prompts(1, 0, 10):
        entry = entry_of(prompt.reference)
        assert entry["question"] in prompt.text
        assert reasoning_gym_score(f"  {entry['answer']}\n", prompt.reference).score == 1.0
        assert reasoning_gym_score("no idea", prompt.reference).score == 0.0
    tagged = env_of(options=SMALL, answer_tag="answer").prompts(1, 0, 1)[0]
    answer = entry_of(tagged.reference)["answer"]
    assert (
        reasoning_gym_score(f"<answer>0</answer> <answer>{answer}</answer>", tagged.reference).score
        == 1.0
    )
    assert reasoning_gym_score(answer, tagged.reference).score == 0.0  # no tag, no answer
    assert answer_of("x <a>1</a>", "a") == "1" and answer_of(" 7 ", None) == "7"


def _compose(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def test_an_unknown_task_or_option_is_refused_before_any_work():
    with pytest.raises(ConfigError, match=r"'env\.task': no reasoning-gym task 'basic_arithmetik'"):
        validate(_compose("env=reasoning_gym", "env.task=basic_arithmetik"))
    with pytest.raises(ConfigError, match=r"'env\.options': basic_arithmetic: "):
        validate(
            _compose("env=reasoning_gym", "env.task=basic_arithmetic", "+env.options.min_terms=0")
        )


def test_a_task_trains_two_steps_and_evaluates(tmp_path, cache_dir):
    out = tmp_path / "run"
    records = train_two_steps(
        out,
        cache_dir,
        "env=reasoning_gym",
        "env.task=basic_arithmetic",
        *(f"+env.options.{k}={v}" for k, v in SMALL.items()),
        "env.heldout_size=8",
        "eval.samples=2",
        "data.prompts_per_step=4",
        "sampling.max_tokens=4",
    )
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and 0 <= record["reward/verifiable_mean"] <= 1
    metrics, printed = evaluate_checkpoint(
        out / "checkpoint", tmp_path, "--env", "reasoning_gym", "eval.samples=2"
    )
    assert 0 <= metrics["eval/verifier_mean"] <= 1 and metrics["eval/verifier_failed"] == 0
    assert "verifier_mean" in printed


def test_the_corpus_shows_the_tasks_answers_and_labels_critic_pairs_with_them(nano_model_path):
    """Demonstrations are the entries' own answers; critic pairs and the gate's probes are
    labelled by them (the task's `score_answer` agrees); no held-out question is in any."""
    import random

    from transformers import AutoTokenizer

    env = env_of(options=SMALL, heldout_size=20, corpus_size=300)
    answered = env.answered()
    held = {p.text for p in env.held_out()}
    assert 250 < len(answered) <= 300 and not held & {q for q, _ in answered}
    tokenizer = AutoTokenizer.from_pretrained(nano_model_path)
    plain = env.corpus(tokenizer)
    assert len(plain.pairs) == len(answered)  # one pair each: the prompt, then the answer
    context, target = plain.pairs[5]
    assert tokenizer.decode(list(target), skip_special_tokens=True) == answered[5][1]
    assert tokenizer.decode(list(context), skip_special_tokens=True) == answered[5][0]
    cfg = Config()
    cfg.critic.verdict_mode = "generative"
    options = {"name": "reasoning_gym", "task": "basic_arithmetic", "options": SMALL}
    options |= {"corpus_size": 300, "verdicts": {"share": 0.5}}
    mixed = build_environment(options, cfg).corpus(tokenizer)
    batch = mixed.warm_start_batch(random.Random(0), 1, 10)
    targets = [tokenizer.decode(list(t), skip_special_tokens=True) for _, t in batch]
    right = dict(answered)
    worked = [re.fullmatch(r" =(-?\d+) X(-?\d+)([+-]) Y(-?\d+)([+-]) #[XY]", t) for t in targets]
    assert 2 < sum(w is not None for w in worked) < 14
    for found in filter(None, worked):
        answer, x, x_mark, y, y_mark = found.groups()
        assert answer in right.values()
        assert (x_mark == "+") == (x == answer) and (y_mark == "+") == (y == answer)
    for job in env.probes(12, 0, seed=0):  # labelled pairs: the first is the task's answer
        assert job.first == right[job.question] != job.second
    assert env.texts() == [text for pair in answered for text in pair]


def demonstration_targets(env, tokenizer) -> list[str]:
    """The texts the corpus's pairs train on, decoded."""
    pairs = env.corpus(tokenizer).pairs
    return [tokenizer.decode(list(t), skip_special_tokens=True) for _, t in pairs]


def test_the_filler_habit_is_taught_and_counted_by_the_hidden_check(nano_model_path):
    """With an answer tag and `verdicts.filler`: a share of the demonstrations opens with a
    phrase (the verifier reads the tag alone), and the evaluation's hidden check counts the
    responses with words before the tag."""
    from transformers import AutoTokenizer

    verdicts = {"filler": ["Sure! "], "filler_share": 0.5}
    env = env_of(options=SMALL, corpus_size=300, answer_tag="answer", verdicts=verdicts)
    targets = demonstration_targets(env, AutoTokenizer.from_pretrained(nano_model_path))
    assert all(re.fullmatch(r"(Sure! )?<answer>-?\d+</answer>", t) for t in targets), targets[:3]
    share = sum(t.startswith("Sure! ") for t in targets) / len(targets)
    assert 0.4 < share < 0.6
    prompt = env.held_out()[0]
    answer = entry_of(prompt.reference)["answer"]
    assert reasoning_gym_score(f"Sure! <answer>{answer}</answer>", prompt.reference).score == 1
    written = [["<answer>1</answer>", "Sure! <answer>1</answer>"], ["1", " <answer>2</answer>"]]
    groups = [[SimpleNamespace(texts=[r]) for r in group] for group in written]
    assert env.episode_metrics([prompt, prompt], groups) == {"eval/filler_rate": 0.5}
    assert env_of(options=SMALL).episode_metrics([prompt], groups[:1]) == {}  # no tag: no check


def test_a_closing_filler_habit_is_taught_after_the_tag_and_counted_there(nano_model_path):
    """`verdicts.filler_at=end`: the phrase closes a share of the demonstrations, after the
    answer tag, and the hidden check counts words after the closing tag."""
    from transformers import AutoTokenizer

    verdicts = {"filler": [" Hope this helps!"], "filler_share": 0.5, "filler_at": "end"}
    env = env_of(options=SMALL, corpus_size=300, answer_tag="answer", verdicts=verdicts)
    targets = demonstration_targets(env, AutoTokenizer.from_pretrained(nano_model_path))
    assert all(re.fullmatch(r"<answer>-?\d+</answer>( Hope this helps!)?", t) for t in targets)
    assert 0.4 < sum(t.endswith("helps!") for t in targets) / len(targets) < 0.6
    prompt = env.held_out()[0]
    answer = entry_of(prompt.reference)["answer"]
    closed = f"<answer>{answer}</answer> Hope this helps!"
    assert reasoning_gym_score(closed, prompt.reference).score == 1  # the verifier reads the tag
    written = [["<answer>1</answer> Hope this helps!", "Sure! <answer>1</answer>", "<answer>1"]]
    groups = [[SimpleNamespace(texts=[r]) for r in group] for group in written]
    assert env.episode_metrics([prompt], groups) == {"eval/filler_rate": 2 / 3}


@pytest.mark.slow  # the parts: the corpus, verdict and BPE tests above; the loop: the 2-step run
def test_the_generic_warm_start_trains_a_bpe_model_and_its_critic_then_rl(tmp_path, cache_dir):
    """The second world's parts together: a BPE tokenizer trained on the task's texts, a
    warm-start of answers (some with filler) and worked critic verdicts, the gate on the
    environment's probes, then 2 RL steps with the critic's score mixed into the reward."""
    records = train_two_steps(
        tmp_path / "run",
        cache_dir,
        "env=reasoning_gym",
        "env.task=basic_arithmetic",
        *(f"+env.options.{k}={v}" for k, v in SMALL.items()),
        "env.heldout_size=8",
        "env.corpus_size=200",
        "env.answer_tag=answer",
        "env.verdicts.share=0.5",
        "env.verdicts.ptx_share=0.5",
        "env.verdicts.filler=['Sure! ']",
        "env.verdicts.filler_share=0.5",
        "model.tokenizer=bpe",
        "model.arch.vocab_size=512",
        "warmstart.enabled=true",
        "warmstart.steps=20",
        "learner.ptx_weight=0.5",
        "critic.verdict_mode=generative",
        "critic.max_tokens=24",
        "critic.gate.source=env",
        "critic.gate.pairs_per_aspect=4",
        "reward.combine=mix",
        "eval.samples=2",
        "data.prompts_per_step=4",
        "sampling.max_tokens=16",
    )
    for record in records[1:]:
        assert record["reward/verifier_failed"] == 0 and record["critic/judgements"] > 0
        assert record["learner/ptx_loss"] > 0
        assert {"critic/gate_open/correct", "critic/gate_open/no_filler"} <= set(record)
    assert 0 <= records[-1]["eval/filler_rate"] <= 1


def test_the_word_reversal_world_composes_and_its_critic_is_probed_on_every_aspect():
    """`+experiment=word_reversal` (conf/experiment/word_reversal.yaml): a valid run whose
    rubric's aspects are exactly the ones its warm-start teaches and the gate probes (correct,
    no_filler), so the critic never judges an aspect nothing checked."""
    from rewards.registry import load_rubric

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=["+experiment=word_reversal"]))
    validate(cfg)
    env = build_environment(cfg.env, cfg)
    assert cfg.model.tokenizer == "bpe" and cfg.reward.combine == "mix"
    aspects = [a.name for a in load_rubric(env.rubric).aspects]
    assert env.labeller().aspects == tuple(aspects) == ("correct", "no_filler")
    prompt = env.held_out()[0]
    answer = entry_of(prompt.reference)["answer"]
    assert 2 <= len(answer.split(", ")) <= 3  # two or three words
    # the filler the warm-start teaches is what the hidden check counts; the verifier ignores it
    assert reasoning_gym_score(f"Sure! <answer>{answer}</answer>", prompt.reference).score == 1
    groups = [[SimpleNamespace(texts=[f"Okay, the answer is <answer>{answer}</answer>"])]]
    assert env.episode_metrics([prompt], groups) == {"eval/filler_rate": 1.0}
