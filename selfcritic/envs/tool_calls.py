"""Tool calls in the model's text, in two formats, and observations in the matching form.

- `hermes` (Qwen2.5/Qwen3, Hermes, and the chat templates that speak of `<tool_call>`): each
  call is `<tool_call>{"name": NAME, "arguments": {...}}</tool_call>`; the template renders the
  results as tool messages, so an observation is the result text alone.
- `compact` (character models, where every character costs): `<call>NAME {json}</call>`, the
  arguments optional; the observation is `<result>TEXT</result>` on a line of its own.
`auto` is `hermes` where the chat template writes `<tool_call>`, else `compact`.
`parse_calls` returns the calls in order; a fragment between the tags that is not a call (bad
JSON, no name) is returned as a `ToolCall` with `malformed` set, which the environment answers
with an error observation (counted), never an exception.
Left out: other vendors' formats (Llama 3's JSON-only calls, Mistral's [TOOL_CALLS]): add one as
a `CallFormat`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict | str  # the parsed object, or the raw text (the toolbox reads it as JSON)
    malformed: str | None = None  # why the fragment is not a call


@dataclass(frozen=True)
class CallFormat:
    pattern: re.Pattern
    observation: str  # how a result is shown: "{text}" filled

    def parse(self, text: str) -> list[ToolCall]:
        return [self.read(match) for match in self.pattern.finditer(text)]

    def read(self, match: re.Match) -> ToolCall:
        raise NotImplementedError


class Hermes(CallFormat):
    def read(self, match: re.Match) -> ToolCall:
        body = match.group(1).strip()
        try:
            call = json.loads(body)
        except json.JSONDecodeError as error:
            return ToolCall("", body, f"the call is not valid JSON ({error})")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return ToolCall("", body, 'a call is {"name": NAME, "arguments": {...}}')
        return ToolCall(call["name"], call.get("arguments", {}))


class Compact(CallFormat):
    def read(self, match: re.Match) -> ToolCall:
        name, arguments = match.group(1), (match.group(2) or "").strip()
        if not name:
            return ToolCall("", arguments, "a call is <call>NAME {json arguments}</call>")
        return ToolCall(name, arguments)


FORMATS = {
    "hermes": Hermes(re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL), "{text}"),
    "compact": Compact(
        re.compile(r"<call>\s*([A-Za-z0-9_.-]*)\s*(.*?)</call>", re.DOTALL),
        "\n<result>{text}</result>\n",
    ),
}


def call_format(setting: str, chat_template: str | None) -> CallFormat:
    """The format `setting` names; "auto": hermes where the template writes <tool_call>."""
    if setting == "auto":
        setting = "hermes" if chat_template and "<tool_call>" in chat_template else "compact"
    return FORMATS[setting]


def parse_calls(text: str, fmt: CallFormat) -> list[ToolCall]:
    """The calls `text` makes, in order (malformed ones marked)."""
    return fmt.parse(text)
