"""Multi-turn episodes with a chat template: observations as turns of their own, ids never
re-tokenized, masks and logprob parity over 3 turns, and the tool-call formats."""

from __future__ import annotations

import dataclasses

import pytest
from test_chat import CHATML, QUESTIONS, build_chat_tokenizer, chat_model  # noqa: F401

from selfcritic.envs.base import Prompt, SingleTurn, Step
from selfcritic.envs.tool_calls import FORMATS, ToolCall, call_format, parse_calls
from selfcritic.model.chat import prompt_encoder


def test_an_observation_is_a_tool_turn_after_the_end_of_turn(tmp_path):
    """ChatML written out by hand: after the model's <|im_end|> comes "\\n", the tool message
    and the next generation prompt."""
    tokenizer = build_chat_tokenizer(tmp_path)
    encode = prompt_encoder(tokenizer)
    by_hand = "\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"
    assert encode.observation("42") == tokenizer(by_hand, add_special_tokens=False).input_ids
    raw = prompt_encoder(tokenizer, "none")  # a character model: the text itself
    assert raw.observation(" = 42") == tokenizer(" = 42", add_special_tokens=False).input_ids


def test_tool_calls_in_both_formats():
    hermes, compact = FORMATS["hermes"], FORMATS["compact"]
    text = 'I will add. <tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    assert parse_calls(text, hermes) == [ToolCall("add", {"a": 1, "b": 2})]
    broken = parse_calls("<tool_call>{name: add}</tool_call><tool_call>[1]</tool_call>", hermes)
    assert [call.malformed is not None for call in broken] == [True, True]
    calls = parse_calls('<call>add {"a": 1}</call> then <call>now</call>', compact)
    assert calls == [ToolCall("add", '{"a": 1}'), ToolCall("now", "")]
    assert parse_calls("no call here", compact) == []
    assert call_format("auto", "...<tool_call>...") is hermes
    assert call_format("auto", CHATML) is compact and call_format("auto", None) is compact


class _ThreeTurns(SingleTurn):
    """Answers the model twice ("Go on." as a tool message), so every episode has 3 turns."""

    name, verifier, rubric = "three", None, "k2_core"
    max_turns = 3

    def prompts(self, step, draw, count):
        return [Prompt(QUESTIONS[(step * count + i) % len(QUESTIONS)], None) for i in range(count)]

    def held_out(self):
        return []

    def reset(self, prompt):
        episode = super().reset(prompt)
        episode.state = 0
        return episode

    def step(self, episode, turn, turn_ids):
        episode.state += 1
        return Step(observation="Go on.") if episode.state < 3 else Step(done=True)


class _Spy:
    """A real engine whose requests are kept (what the engine conditioned on)."""

    def __init__(self, engine) -> None:
        self.engine, self.requests = engine, []

    def generate(self, prompts, spec):
        self.requests += [list(p) for p in prompts]
        return self.engine.generate(prompts, spec)


def test_three_turn_episodes_extend_their_ids_and_match_the_learner(chat_model):  # noqa: F811
    """Every request of a later turn starts with the episode's earlier request and what the
    engine answered; the observation ids are the tool turn; the learner's logprobs of every
    model token (the loss mask) equal the engine's."""
    import torch
    from transformers import AutoTokenizer

    from selfcritic.config import RolloutConfig
    from selfcritic.learner.logprobs import token_logprobs
    from selfcritic.model.build import load_model
    from selfcritic.rollout.episodes import observing_for, run_episodes
    from selfcritic.rollout.types import SamplingSpec
    from selfcritic.rollout.vllm_engine import VLLMEngine

    encode = prompt_encoder(AutoTokenizer.from_pretrained(str(chat_model)))
    env = _ThreeTurns()
    prompts = env.prompts(0, 0, 2)
    spec = SamplingSpec(
        n=2, temperature=1.0, max_tokens=6, seed=3, stop_token_ids=encode.stop_token_ids()
    )
    engine = _Spy(VLLMEngine(chat_model, dataclasses.replace(RolloutConfig(), in_process=True)))
    try:
        groups = run_episodes(
            engine, env, prompts, [encode(p.text) for p in prompts], spec, encode.observation,
            256, env.max_turns, observing_for(env, encode),
        )  # fmt: skip
    finally:
        engine.engine.shutdown()
    tool_turn = encode.observation("Go on.")
    stops = encode.stop_token_ids()  # (<|im_end|>, EOS): either ends a turn
    model = load_model(chat_model)
    for trajectory in (t for group in groups for t in group):
        assert len(trajectory.turns) == 3 and trajectory.finish_reason == "done"
        for (_, end, _), (start, _, _) in zip(trajectory.turns, trajectory.turns[1:], strict=False):
            observation = trajectory.ids[end:start]
            closed = [] if trajectory.ids[end - 1] in stops else [stops[0]]
            assert observation == closed + tool_turn  # a cut turn is closed first
            assert trajectory.ids[:start] in engine.requests  # the next turn's request
        assert sum(trajectory.loss_mask) == sum(e - s for s, e, _ in trajectory.turns)
        ids = torch.tensor([trajectory.ids])
        with torch.no_grad():  # position t - 1 predicts token t
            learner = token_logprobs(model, ids, torch.ones_like(ids), temperature=1.0)[0]
        for t, masked in enumerate(trajectory.loss_mask):
            if masked:
                assert learner[t - 1].item() == pytest.approx(trajectory.logprobs[t], abs=1e-4)


def test_an_observation_over_its_budget_keeps_its_framing_and_ends(tmp_path):
    """The observation's own tokens are cut in the middle, marked; the template's tool-turn
    framing (the end of turn, the next generation prompt) is always whole."""
    from selfcritic.rollout.episodes import OBSERVATION_CUT, fit_observation

    tokenizer = build_chat_tokenizer(tmp_path)
    encode = prompt_encoder(tokenizer)
    text = "<result>" + "".join(f"{i} " for i in range(200)) + "</result>"
    frame = len(encode.observation(""))
    ids, shown, cut = fit_observation(text, encode.observation, 30)
    assert cut and OBSERVATION_CUT in shown and len(ids) <= frame + 30
    assert shown.startswith("<result>0 1 2") and shown.endswith("199 </result>")
    assert ids == encode.observation(shown)
    assert tokenizer.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert fit_observation("42", encode.observation, 30) == (encode.observation("42"), "42", False)


def test_a_template_that_rewrites_earlier_turns_is_refused(tmp_path):
    """Like Qwen3's stock template: the last assistant turn gets a block the earlier ones do
    not, so an observation cannot be appended as ids."""
    tokenizer = build_chat_tokenizer(tmp_path)
    rewriting = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and loop.last %}<think></think>{% endif %}"
        "{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    encode = prompt_encoder(tokenizer)
    encode.template = rewriting
    with pytest.raises(ValueError, match="data.chat_template"):
        encode.observation("42")


def test_an_episode_out_of_turns_has_no_final_answer():
    from selfcritic.envs.base import Trajectory
    from selfcritic.envs.reasoning import answer_of

    class Tools:
        answer_is_last_turn = True

    episode = Trajectory(Prompt("q", "5"), [1], 1, [0], [0.0], [], ["<call>a</call>", "5"], "")
    episode.finish_reason = "done"
    assert answer_of(Tools(), episode) == "5"
    episode.finish_reason = "turns"  # its last turn was a call the episode had no turn to use
    assert answer_of(Tools(), episode) is None
