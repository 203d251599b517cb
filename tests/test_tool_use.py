"""`env=tool_use`: the calculator questions with the shipped MCP server, episodes that call it,
every fault as an error observation and a count, and `+experiment=tools_quick` for 2 steps."""

from __future__ import annotations

import json

import pytest
from cli_runs import read_jsonl, train_two_steps
from hydra import compose, initialize_config_dir

from selfcritic.envs.registry import build_environment
from selfcritic.envs.tool_calls import FORMATS
from selfcritic.run import CONF_DIR, to_config
from selfcritic.tools import McpServerSpec


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(
            compose(config_name="config", overrides=["+experiment=tools_quick", *overrides])
        )


def test_an_episode_calls_the_mcp_server_and_faults_are_observations():
    cfg = _config()
    env = build_environment(cfg.env, cfg)
    try:
        prompt = env.prompts(1, 0, 1)[0]
        assert prompt.text.startswith("Tools: add(a,b) multiply(a,b) lookup(name) count()\nQ: ")
        episode = env.reset(prompt)
        turn = 'First <call>multiply {"a": 53, "b": 31}</call> then <call>count</call>'
        step = env.step(episode, turn, ())
        assert not step.done and step.observation == "\n<result>1643\n1</result>\n"
        faults = (
            '<call>divide {"a": 1}</call><call>add {"a": "x", "b": 1}</call><call>add {oops'
            '}</call><call>lookup {"name": "tau"}</call><call>count</call>'
        )
        step = env.step(episode, faults, ())
        lines = step.observation.strip().removeprefix("<result>").removesuffix("</result>")
        assert lines.startswith("Error (unknown_tool): there is no tool named 'divide'")
        assert lines.count("Error (") == 4 and lines.endswith("\n2")  # the session's 2nd count
        assert env.step(episode, "The answer is 1643.", ()).done  # no call: the final answer
        log = episode.info.pop("calls")  # the tool log: every call, as the tools answered it
        assert [(r.name, r.result, r.error) for r in log[:2]] == [
            ("multiply", "1643", None),
            ("count", "1", None),
        ]
        assert [r.error for r in log[2:]] == [
            "unknown_tool",
            "bad_arguments",
            "malformed",
            "tool_error",
            None,
        ]
        assert episode.info == {
            "tool_calls": 7,
            "tool_errors/unknown_tool": 1,
            "tool_errors/bad_arguments": 1,
            "tool_errors/malformed": 1,
            "tool_errors/tool_error": 1,
        }
        fresh = env.reset(prompt)  # a new episode: a new MCP session, the count starts over
        assert env.step(fresh, "<call>count</call>", ()).observation == "\n<result>1</result>\n"
        env.close_episode(fresh)
    finally:
        env.close()


def test_hermes_calls_to_a_stdio_server_are_answered_as_tool_messages():
    """The calculator over stdio this time (a process per episode), called the Qwen way."""
    cfg = _config("env.tool_format=hermes")
    stdio = McpServerSpec("calc", command=["python", "-m", "selfcritic.tools.servers.calculator"])
    cfg.env.tools.mcp_servers = [stdio]
    env = build_environment(cfg.env, cfg)
    env.chat = True  # as with a chat template: the result alone, rendered as a tool turn
    try:
        episode = env.reset(env.prompts(1, 0, 1)[0])
        call = {"name": "add", "arguments": {"a": 2, "b": 40}}
        step = env.step(episode, f"<tool_call>{json.dumps(call)}</tool_call>", ())
        assert env.format is FORMATS["hermes"] and step.observation == "42"
        assert env.step(episode, '<tool_call>{"name": "count"}</tool_call>', ()).observation == "1"
        env.close_episode(episode)
    finally:
        env.close()


@pytest.mark.slow  # 4-6 minutes; the tool world's 2-step test trains over MCP in the default suite
def test_tools_quick_trains_two_steps_with_whole_episodes_recorded(tmp_path, cache_dir):
    """The experiment as a user runs it, its warm-start cut to 50 steps at higher rates (the
    model then calls, some calls malformed): episodes of several turns, the servers' answers
    and the error observations in the sample table, the calls counted."""
    out = tmp_path / "run"
    short = ["warmstart.steps=50", "warmstart.muon_lr=0.01", "warmstart.adamw_lr=3e-3"]
    settings = [*short, "tracking.samples_every=1", "eval.samples=2"]
    records = train_two_steps(out, cache_dir, *settings, experiment="tools_quick")
    for record in records[1:]:
        assert record["rollout/turns"] > 1 and record["episode/tool_calls"] > 0
        assert record["reward/verifier_failed"] == 0
    assert records[-1]["eval/verifier_failed"] == 0
    rows = read_jsonl(out / "samples.jsonl")
    assert rows and all(row["prompt"].startswith("Tools: add(a,b)") for row in rows)
    episodes = [row["response"] for row in rows if "[observation: " in row["response"]]
    assert episodes and all(e.startswith("<call>") for e in episodes)  # whole episodes
    assert any("<result>" in e and "Error (" not in e for e in episodes)  # a server's answer
