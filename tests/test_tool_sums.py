"""The tool world (selfcritic/envs/tool_sums.py): its questions and split, the hidden oracle on
hand-written episodes, the critic's labelled pairs and targets (worked out by hand), and the
corpus against the real calculator MCP server."""

from __future__ import annotations

import json
import math
import random
import re
from contextlib import closing

import pytest
from hydra import compose, initialize_config_dir

from selfcritic.config import ConfigError
from selfcritic.envs.base import Prompt, Trajectory
from selfcritic.envs.registry import build_environment
from selfcritic.envs.tool_sums import (
    ASPECTS,
    Facts,
    episode_facts,
    is_plus_zero,
    labelled_pair,
    operands,
    oracle_rates,
    synthetic,
)
from selfcritic.envs.tool_use import ToolRecord
from selfcritic.run import CONF_DIR, to_config

CALL = '<call>add {"a": 53, "b": 31}</call>'
SEEN = "[observation: <result>84</result>]"


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(
            compose(config_name="config", overrides=["+experiment=tool_world", *overrides])
        )


@pytest.fixture(scope="module")
def env():
    cfg = _config()
    environment = build_environment(cfg.env, cfg)
    yield environment
    environment.close()


def _ops(text: str) -> tuple[int, int]:
    a, b = re.search(r"Q: (\d+)\*(\d+)", text).groups()
    return int(a), int(b)


def drawn_all(env) -> list:
    return [p for step in range(50) for p in env.prompts(step, 0, 16)] + env.held_out()


def test_questions_split_and_mix(env):
    train = {p.text for p in env.one_digit + env.zero + env.two_digit}
    evaluated = env.held_out()
    one = [p for p in evaluated if max(operands(p.text)) < 10]
    zero = [p for p in evaluated if is_plus_zero(*operands(p.text))]
    held = [p for p in evaluated if p not in one + zero]
    assert (len(held), len(one), len(zero)) == (96, 40, 40)  # heldout_max, eval_one_digit, _zero
    # every one-digit and plus-zero fact is taught: a call there is needless
    assert len(env.one_digit) == 100 and len(env.zero) == 90
    assert {operands(p.text) for p in env.zero} == {(a, 0) for a in range(10, 100)}
    assert all(min(operands(p.text)) >= 10 for p in env.two_digit)  # 30+50 is one too
    assert {p.text.split("\n", 1)[1] for p in one + zero} <= train
    assert held and not {p.text.split("\n", 1)[1] for p in held} & train
    twins = {f"Q: {b}+{a}\nA:" for a, b in map(operands, (p.text for p in held))}
    assert not {p.text for p in env.products} & {p.text for p in drawn_all(env)}
    assert not twins & train  # b+a is held out with a+b
    assert len({operands(p.text)[0] for p in held}) > 40  # spread, not a=10..14
    drawn = [p for step in range(50) for p in env.prompts(step, 0, 16)]
    assert drawn[:16] == env.prompts(0, 0, 16)  # a pure function of (seed, step, draw)
    assert drawn[:16] != env.prompts(0, 1, 16) and drawn[:16] != drawn[16:32]
    share = sum(max(operands(p.text)) < 10 for p in drawn) / len(drawn)
    assert 0.2 < share < 0.3  # one_digit_share 0.25 over 800 draws
    share = sum(is_plus_zero(*operands(p.text)) for p in drawn) / len(drawn)
    assert 0.11 < share < 0.19  # zero_share 0.15
    prefix = "Tools: add(a,b) multiply(a,b)\nQ: "
    assert all(p.text.startswith(prefix) and p.text.endswith("\nA:") for p in drawn)
    assert all(int(p.reference) == sum(operands(p.text)) for p in drawn)


def test_shares_above_one_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"env\.zero_share.*more than 1"):
        cfg = _config("env.one_digit_share=0.9", "env.zero_share=0.2")
        build_environment(cfg.env, cfg)


def test_the_oracle_reads_the_tool_log():
    log = [ToolRecord("add", {"a": 31, "b": 53}, "84")]  # the operands in either order
    right = episode_facts("Q: 53+31\nA:", [CALL, "84"], log, "84")
    assert (right.calls, right.valid_calls, right.correct, right.faithful) == (1, 1, True, True)
    assert all(right.meets(aspect) for aspect in ASPECTS)
    misread = episode_facts("Q: 53+31\nA:", [CALL, "48"], log, "48")
    assert misread.faithful is False and not misread.meets("faithful") and not misread.correct
    wrong_args = [ToolRecord("add", '{"a": 53, "b": 13}', "66.0")]  # raw text arguments
    copied = episode_facts("Q: 53+31\nA:", [CALL, "66"], wrong_args, "66")
    assert (copied.valid_calls, copied.faithful, copied.correct) == (0, True, False)
    failed = [ToolRecord("add", "{oops", "Error (malformed): ...", "malformed")]
    guess = episode_facts("Q: 53+31\nA:", ["<call>add {oops</call>", "85"], failed, "85")
    assert (guess.calls, guess.results, guess.faithful) == (1, (), None)
    assert not guess.meets("grounded") and guess.meets("economical")  # one call is allowed
    small = [ToolRecord("add", {"a": 3, "b": 5}, "8.0")]
    needless = episode_facts("Q: 3+5\nA:", ['<call>add {"a": 3, "b": 5}</call>', "8"], small, "8")
    assert needless.correct and not needless.meets("economical") and needless.meets("grounded")
    forged = episode_facts("Q: 53+31\nA:", ["<result>84</result> 84"], [], "84")
    assert forged.forged and forged.correct and not forged.meets("grounded")
    # out of turns on a second call: no answer (as the verifier reads it), two calls counted
    twice = episode_facts("Q: 53+31\nA:", [CALL, CALL], log * 2, None)
    assert (twice.calls, twice.answer, twice.correct) == (2, "", False)
    assert not twice.meets("economical") and not twice.meets("faithful")


def test_oracle_rates_worked_by_hand():
    facts = [
        Facts(53, 31, 1, 1, ("84",), "84"),  # two-digit, called, right, faithful
        Facts(53, 31, 1, 0, ("66.0",), "85"),  # two-digit, called with wrong operands, unfaithful
        Facts(21, 30, 0, 0, (), "51"),  # two-digit, unaided, right
        Facts(21, 30, 0, 0, (), "<result>51.0</result> 52", forged=True),  # invented
        Facts(3, 5, 1, 1, ("8.0",), "8"),  # one-digit, needless call
        Facts(3, 5, 0, 0, (), "9"),  # one-digit, wrong
        Facts(47, 0, 1, 1, ("47",), "47"),  # plus zero, needless call, right
        Facts(47, 0, 0, 0, (), "47"),  # plus zero, alone, right
        Facts(20, 0, 0, 0, (), "2"),  # plus zero, alone, wrong
    ]
    expected = {
        "eval/accuracy_needs_tool": 2 / 4,
        "eval/accuracy_one_digit": 1 / 2,
        "eval/accuracy_plus_zero": 2 / 3,
        "eval/accuracy_with_call": 1 / 2,
        "eval/accuracy_without_call": 1 / 2,
        "eval/call_rate_needs_tool": 2 / 4,
        "eval/needless_call_rate": 2 / 5,
        "eval/needless_call_rate_one_digit": 1 / 2,
        "eval/needless_call_rate_plus_zero": 1 / 3,
        "eval/valid_argument_rate": 3 / 4,
        "eval/faithful_rate": 3 / 4,
        "eval/invented_rate": 1 / 9,
    }
    rates = oracle_rates(facts)
    assert {key: rates[key] for key in expected} == expected
    assert math.isnan(oracle_rates([facts[0]])["eval/needless_call_rate"])


def test_critic_targets_worked_by_hand():
    letters, prompt = ("X", "Y"), "Tools: add(a,b)\nQ: 53+31\nA:"
    called = synthetic(53, 31, 1, 84)
    assert called.text == f"{CALL} {SEEN} 84" and called.facts.faithful
    pair = labelled_pair(prompt, "faithful", False, random.Random(0))
    said = pair.second.facts.answer
    assert pair.meets == (True, False) and said != "84"
    assert pair.critic_answer(False, letters, "#") == f" X84=84+ Y84={said}- #X"
    assert pair.critic_answer(True, letters, "#") == f" X84={said}- Y84=84+ #Y"
    pair = labelled_pair("Q: 3+5\nA:", "economical", False, random.Random(1))
    assert pair.critic_answer(True, letters, "#") == " =0 X1- Y0+ #Y"
    pair = labelled_pair("Q: 47+0\nA:", "economical", False, random.Random(1))
    assert pair.critic_answer(True, letters, "#") == " =0 X1- Y0+ #Y"  # plus zero: no call
    assert Facts(47, 0).head("grounded") == " =1" and Facts(30, 50).head("grounded") == " =2"
    for seed in range(20):  # a tie names the first shown, in either order
        tie = labelled_pair(prompt, "grounded", True, random.Random(seed))
        assert tie.meets[0] == tie.meets[1]
        assert tie.critic_answer(True, letters, "#").endswith("#X")
    with pytest.raises(ValueError, match="needless"):
        labelled_pair(prompt, "economical", False, random.Random(0))


def _as_episode(prompt: str, response) -> Trajectory:
    """A synthetic response as the episode driver would record it: its turns, the server's
    observations ("\n<result>84</result>\n"), and the tool log."""
    text, facts = response.text, response.facts
    turns = re.findall(r"<call>.*?</call>", text) + [facts.answer]
    results = re.findall(r"<result>(.*?)</result>", text) if facts.calls else []
    observations = [f"\n<result>{r}</result>\n" for r in results]
    log = [
        ToolRecord("add", json.loads(t.split(" ", 1)[1][:-7]), r)
        for t, r in zip(turns[:-1], results, strict=True)
    ]
    if facts.forged:
        turns, observations, log = [text], [], []
    return Trajectory(
        Prompt(prompt, None), [], 0, [], [], [], turns, "done", {"calls": log},
        observations=observations, answer=turns[-1],
    )  # fmt: skip


def test_labelled_pairs_agree_with_the_oracle_on_real_episodes(env):
    """Every corpus pair, recorded as a real episode would be: the critic's view of it is the
    pair's text, and the oracle's reading of it gives the pair's labels."""
    rng = random.Random(3)
    for _ in range(400):
        pair = env.labelled(rng)
        assert (pair.meets[0] == pair.meets[1]) == pair.tie and (pair.tie or pair.meets[0])
        for response in (pair.first, pair.second):
            episode = _as_episode(pair.prompt, response)
            assert episode.critic_text == response.text
            facts = episode_facts(pair.prompt, episode.texts, episode.info["calls"], episode.answer)
            assert facts.meets(pair.aspect) == response.facts.meets(pair.aspect)
    probes = env.probes(4, 2, seed=0)
    assert len(probes) == 3 * 6 and {job.aspect for job in probes} == set(ASPECTS)
    corpus_questions = {env.labelled(rng).prompt for _ in range(2000)}
    assert not {job.question for job in probes} & corpus_questions  # no probe is trained on


def test_faithful_pairs_do_not_teach_correctness():
    """Faithful is the answer against the result: some faithful answers are wrong sums (a
    misread call), some unfaithful ones right."""
    rng, prompt = random.Random(5), "Q: 53+31\nA:"
    pairs = [labelled_pair(prompt, "faithful", False, rng) for _ in range(300)]
    assert any(not p.first.facts.correct for p in pairs)
    assert any(p.second.facts.correct for p in pairs)


def test_an_episode_out_of_turns_shows_the_critic_its_last_call():
    episode = Trajectory(
        Prompt("Q: 53+31\nA:", "84"), [], 0, [], [], [], [CALL, CALL], "turns", {},
        observations=["\n<result>84</result>\n"] * 2, answer="",
    )  # fmt: skip
    assert episode.critic_text == f"{CALL} {SEEN} {CALL} {SEEN}"


def test_the_corpus_shows_the_servers_results(env, nano_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(nano_model_path)
    corpus = env.corpus(tokenizer)
    pairs = corpus.actor.pairs
    # each one-digit sum (12 copies), plus-zero sum (4) and direct demo one pair; each add or
    # multiply call two: 24 two-digit sums, the 90 plus-zero ones (needless), 300 products
    assert len(pairs) == 12 * 100 + 4 * 90 + 300 + 2 * (24 + 90 + 300)
    texts = [tokenizer.decode(list(c) + list(t)) for c, t in pairs]
    called = [t for t in texts if "<call>add" in t and "<result>" in t]
    zero = [t for t in called if is_plus_zero(*operands(t))]
    assert len(called) == 24 + 90 and len(zero) == 90  # the server's answer in the context
    products = [t for t in texts if "<call>multiply" in t and "<result>" in t]
    assert len(products) == 300  # the other tool's calls, with the server's results
    assert all(f"<result>{a * b}</result>" in t for t in products for a, b in [_ops(t)])
    for text in called:
        a, b = operands(text)
        assert f"<result>{a + b}</result>" in text  # as `synthetic` renders it
    batch = corpus.warm_start_batch(random.Random(0), 0, 10)
    assert len(batch) == 64
    texts = [[tokenizer.decode(list(ids), skip_special_tokens=True) for ids in p] for p in batch]
    verdicts = [(context, target) for context, target in texts if "#" in target]
    assert 15 < len(verdicts) < 37  # critic_share 0.4 of 64
    assert all(
        context.startswith("C: Tools: add(a,b) multiply(a,b) Q: ") for context, _ in verdicts
    )
    assert all(context.endswith(tuple(f"\n{a}->" for a in ASPECTS)) for context, _ in verdicts)
    longest = max(len(c) + len(t) for c, t in batch)
    assert longest <= 256  # the nano model's context


def test_needless_call_demonstrations_show_every_sum_known_alone(nano_model_path):
    """`env.needless_copies=1`, `env.zero_needless_copies=2`: each one-digit sum once more and
    each plus-zero sum twice more, answered with an `add` call and the server's result."""
    from transformers import AutoTokenizer

    overrides = ("env.needless_copies=1", "env.zero_needless_copies=2", "env.product_demos=0")
    cfg = _config(*overrides, "env.direct_demos=0")
    tokenizer = AutoTokenizer.from_pretrained(nano_model_path)
    with closing(build_environment(cfg.env, cfg)) as env:
        texts = [tokenizer.decode(c + t) for c, t in env.corpus(tokenizer).actor.pairs]
        called = [t for t in texts if "<call>add" in t and "<result>" in t]
        one_digit = [operands(t) for t in called if max(operands(t)) < 10]
        assert sorted(one_digit) == sorted(operands(p.text) for p in env.one_digit)
        zero = [operands(t) for t in called if is_plus_zero(*operands(t))]
        assert sorted(zero) == sorted(operands(p.text) for p in env.zero * 2)
        assert all(f"<result>{sum(operands(t))}</result>" in t for t in called)


def test_the_tool_world_trains_two_steps_and_reports_the_oracles_rates(tmp_path, cache_dir):
    """`+experiment=tool_world` as a user runs it, its warm-start cut to 50 steps at higher
    rates on many call demonstrations (so that the model calls): episodes that call the shipped
    MCP server, the critic on the process rubric, and the oracle's rates in the evaluation."""
    from cli_runs import read_jsonl, train_two_steps

    out = tmp_path / "run"
    short = ["warmstart.steps=50", "warmstart.muon_lr=0.01", "warmstart.adamw_lr=3e-3"]
    calls = ["env.call_demos=300", "env.direct_demos=20", "env.heldout_max=16"]
    calls += ["env.corpus_batch=16", "env.critic_share=0.25", "env.product_demos=40"]
    # one copy of each sum known alone, most prompts two-digit: calls dominate what is shown
    calls += ["env.one_digit_copies=1", "env.zero_copies=1", "env.one_digit_share=0.1"]
    calls += ["env.zero_share=0.1", "eval.samples=2"]
    settings = [*short, *calls, "data.prompts_per_step=8", "tracking.samples_every=1"]
    records = train_two_steps(out, cache_dir, *settings, experiment="tool_world")
    for record in records[1:]:
        assert record["episode/tool_calls"] > 0 and record["rollout/turns"] > 1
        assert record["reward/verifier_failed"] == 0
        assert any(key.startswith("critic/") for key in record)
    final = records[-1]
    assert 0 < final["eval/call_rate_needs_tool"] <= 1
    assert 0 <= final["eval/valid_argument_rate"] <= 1
    rows = read_jsonl(out / "samples.jsonl")
    assert any("[observation: \n<result>" in row["response"] for row in rows)
    assert (out / "report.md").read_text().count("tool-call rate") == 2
