"""`env=tool_use`: questions from a data file, answered with tools over several turns.

The prompts are a `dataset` environment's (every option of env=dataset, with its held-out split
and bad-data checks), each offering the run's tools (`tools`: Python functions, MCP servers,
synthetic tools, the sandboxed `python` tool; selfcritic/tools/). An episode:
- the model writes a turn; each tool call in it (`tool_format`, selfcritic/envs/tool_calls.py)
  runs in the episode's own `Toolbox` (a fresh MCP session per episode), and the results, one
  observation, go back as the next turn's input (with a chat template, a `tool` message);
- a turn without a call is the final answer: the verifier scores it alone
  (`answer_is_last_turn`), the critic sees the whole episode (Trajectory.critic_text);
- `max_turns` model turns at most; each observation is cut to `max_observation_tokens`.
Faults of the model's calls (malformed, unknown tool, bad arguments, a raising or hanging tool)
come back as error observations and are counted in the episode's info (`tool_calls`,
`tool_errors/<reason>`), never a crash. The info's `calls` is the episode's tool log, a
`ToolRecord` per call (name, arguments, the result text, the error reason or None): what a
hidden oracle checks the answer against (selfcritic/envs/tool_sums.py). The tool runtime
(servers) starts at the first episode, not when the environment is built (the preflight builds
it), and stops at `close`.
Left out: tools chosen per prompt (every prompt offers all of them).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field

from selfcritic.config import Config, ConfigError, keyed, setting
from selfcritic.envs.base import Episode, Prompt, Step
from selfcritic.envs.dataset import DatasetEnvironment, DatasetOptions
from selfcritic.envs.registry import register_environment
from selfcritic.envs.tool_calls import FORMATS, call_format, parse_calls
from selfcritic.tools.options import ToolsOptions, check_options


@dataclass(frozen=True)
class ToolRecord:
    """One call of an episode as the tools answered it (the episode's `info["calls"]`)."""

    name: str
    arguments: dict | str  # as the model wrote them (parsed, or the raw text)
    result: str  # the text the tool returned (an error's message where it failed)
    error: str | None = None  # the fault's reason (malformed, unknown_tool, ...), None: answered


@dataclass
class ToolUseOptions(DatasetOptions):
    """A data file's questions with tools (selfcritic/envs/tool_use.py)."""

    name: str = "tool_use"
    tools: ToolsOptions = field(default_factory=ToolsOptions)
    # how calls are written: auto (hermes where the chat template writes <tool_call>, else
    # compact) | hermes | compact
    tool_format: str = setting("auto", one_of=("auto", *FORMATS))
    max_turns: int = setting(4, ge=1)  # model turns per episode
    max_observation_tokens: int = setting(256, ge=1)  # an observation's tokens at most
    parallel_steps: int = setting(16, ge=1)  # episodes whose tool calls run at once
    # the tools' list shown in the prompt text when no chat template renders them ({tools}:
    # each tool's name and argument names, "add(a,b) multiply(a,b)")
    tools_preamble: str = "Tools: {tools}\n"
    rubric: str = "k2_agentic"  # the critic's rubric: the answer and the process


@register_environment("tool_use", ToolUseOptions)
class ToolUse(DatasetEnvironment):
    """Questions answered over several turns with tools; the final turn is verified."""

    answer_is_last_turn = True

    def __init__(self, options: ToolUseOptions, cfg: Config) -> None:
        try:
            check_options(options.tools, "env.tools")
        except ValueError as error:
            raise ConfigError(keyed("env.tools", str(error))) from error
        super().__init__(options, cfg)
        self.max_turns = options.max_turns
        self.max_observation_tokens = options.max_observation_tokens
        self.parallel_steps = options.parallel_steps
        self.format = call_format(options.tool_format, None)
        self.chat = False  # set by `use_encoder`: observations are then tool messages
        self.listed_in_text = True  # the tools listed in the prompt text (no template shows them)
        self._runtime = None
        self._starting = threading.Lock()
        self._schemas: str | None = None

    def use_encoder(self, encode) -> None:
        """The trainer's prompt encoder: its chat template picks the call format (auto)."""
        self.format = call_format(self.options.tool_format, encode.template)
        self.chat = encode.chat
        # a chat template without a tools section would not show them: list them in the text
        self.listed_in_text = not encode.chat or "tools" not in (encode.template or "")

    def runtime(self):
        """The tool runtime, started at first use (servers up, tools listed)."""
        with self._starting:
            if self._runtime is None:
                from selfcritic.tools.runtime import ToolRuntime

                self._runtime = ToolRuntime(self.options.tools)
                schemas = self._runtime.schemas()
                self._schemas = json.dumps(schemas)
                self._listed = " ".join(listed(schema["function"]) for schema in schemas)
            return self._runtime

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        return [self.shown(p) for p in super().prompts(step, draw, count)]

    def held_out(self) -> list[Prompt]:
        return [self.shown(p) for p in super().held_out()]

    def all_prompts(self) -> list[Prompt]:
        return [self.shown(p) for p in self.train] + self.held_out()  # held_out(): shown

    def keep_prompts(self, keep) -> None:
        super().keep_prompts(lambda prompt: keep(self.shown(prompt)))

    def shown(self, prompt: Prompt) -> Prompt:
        """The prompt with the tools: as schemas for a chat template, and listed in its text
        for a model without one."""
        self.runtime()
        if not self.listed_in_text:
            return dataclasses.replace(prompt, tools=self._schemas)
        text = self.options.tools_preamble.format(tools=self._listed) + prompt.text
        return dataclasses.replace(prompt, text=text, tools=self._schemas)

    def reset(self, prompt: Prompt) -> Episode:
        return Episode(prompt, state=self.runtime().episode(), info={"tool_calls": 0})

    def step(self, episode: Episode, turn: str, turn_ids: tuple[int, ...]) -> Step:
        calls = parse_calls(turn, self.format)
        if not calls:
            self.close_episode(episode)
            return Step(done=True)
        return Step(observation=self._results(episode.state, calls, episode.info))

    def _results(self, box, calls, info: dict) -> str:
        """The observation answering a turn's `calls`, run in `box`; counts into `info`."""
        results = []
        for call in calls:
            info["tool_calls"] = info.get("tool_calls", 0) + 1
            if call.malformed:
                reason, text = "malformed", f"Error (malformed): {call.malformed}"
            else:
                result = box.call(call.name, call.arguments)
                reason, text = result.error, result.text
            if reason:
                info[f"tool_errors/{reason}"] = info.get(f"tool_errors/{reason}", 0) + 1
            info.setdefault("calls", []).append(ToolRecord(call.name, call.arguments, text, reason))
            results.append(text)
        observation = "\n".join(results)
        if self.chat:
            return observation
        return self.format.observation.format(text=observation)

    def demonstration(self, prompt: Prompt) -> tuple[list[str], list[str]] | None:
        """A demonstration's turns, and the observations its calls really get (the tools run,
        in an episode of their own): the warm-start shows what RL will see."""
        found = super().demonstration(prompt)
        return None if found is None else self.observed(found[0])

    def observed(self, turns: list[str]) -> tuple[list[str], list[str]]:
        """A demonstration's turns and the observations their calls get from the tools."""
        box = self.runtime().episode()
        try:
            observations = [self._results(box, parse_calls(t, self.format), {}) for t in turns[:-1]]
        finally:
            box.close()
        return turns, observations

    def close_episode(self, episode: Episode) -> None:
        """End the episode's tool sessions (the driver calls it for every episode)."""
        if episode.state is not None:
            episode.state.close()
            episode.state = None

    def close_episodes(self, episodes) -> None:
        """End many episodes' tool sessions at once (the driver's end of a rollout)."""
        boxes = [e.state for e in episodes if e.state is not None]
        if boxes:
            self.runtime().close_episodes(boxes)
        for episode in episodes:
            episode.state = None

    def close(self) -> None:
        """Stop the tool servers (the end of the run)."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def listed(function: dict) -> str:
    """A tool as the prompt text lists it: its name and its arguments' names, `add(a,b)`
    (short: a character model pays for every character)."""
    return f"{function['name']}({','.join(function['parameters'].get('properties', {}))})"
