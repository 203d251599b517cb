"""What a tool is and what a call of it returns, and the checks every call passes first.

A `Tool` is a name, a description, a JSON schema of its arguments (an object schema) and how it
runs: `run(arguments) -> str | ToolResult` in a worker thread (Python functions, synthetic
tools, the sandboxed `python` tool), or an MCP server's `call_tool` (`server` names the server;
the runtime holds the episode's session). `ToolResult` is what the model sees (`text`) and why
a call failed (`error`, one of `REASONS`), never an exception.

Argument checks use `jsonschema` (installed with `mcp`, pinned in pyproject.toml), with the
validator the schema's own `$schema` names (draft 2020-12 when it names none).
Left out: running the tool (runtime.py), tool-call parsing in the model's text (the rollout's).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

REASONS = ("malformed", "unknown_tool", "bad_arguments", "tool_error", "timeout", "server_error")
"""Why a call failed, as counted in `ToolResult.error`:
- malformed: the arguments are not JSON, or not a JSON object;
- unknown_tool: no tool of that name in the episode;
- bad_arguments: the arguments fail the tool's schema;
- tool_error: the tool raised, or its MCP server answered with an error result;
- timeout: the call ran past its timeout and was cut;
- server_error: the MCP server could not be reached or its session broke (not the model's fault).
"""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments; "type": "object"
    run: Callable[[dict[str, Any]], Any] | None = None  # -> str | ToolResult, in a worker thread
    server: str | None = None  # or: the MCP server (McpServerSpec.name) whose call_tool runs it
    remote_name: str | None = None  # the server's name for it (None: `name`)
    timeout_s: float | None = None  # None: the runtime's call_timeout_s
    source: str = ""  # where it came from, for error messages ("python:pkg.mod:fn", ...)

    def schema(self) -> dict[str, Any]:
        """The tool in the function-calling format chat templates take (`tools=[...]`)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolResult:
    text: str  # the observation the model sees (an error's explanation when `error` is set)
    error: str | None = None  # None, or one of REASONS
    tool: str = ""  # the name called (as given, also when unknown)
    elapsed_s: float = 0.0
    truncated: bool = False  # text was cut at max_observation_chars
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the sandbox's exit status


class ArgumentError(ValueError):
    """A call's arguments cannot be used; `reason` is "malformed" or "bad_arguments"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_tool(tool: Tool) -> None:
    """ValueError naming the tool and its source when its schema cannot check arguments."""
    where = f"tool {tool.name!r} ({tool.source})"
    if not tool.name or not isinstance(tool.name, str):
        raise ValueError(f"{where}: a tool needs a non-empty string name")
    if not isinstance(tool.parameters, dict) or tool.parameters.get("type") != "object":
        raise ValueError(
            f'{where}: its argument schema must be a JSON object schema ({{"type": "object", '
            f'"properties": ...}}), got {tool.parameters!r}'
        )
    try:
        _validator_class(tool.parameters).check_schema(tool.parameters)
    except jsonschema.SchemaError as error:
        message = f"{where}: its argument schema is not valid JSON schema: {error.message}"
        raise ValueError(message) from None


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """The arguments as a dict: a dict as it is, a string read as JSON; None or a blank
    string as no arguments. ArgumentError("malformed") otherwise."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            message = f"the arguments are not valid JSON ({error})"
            raise ArgumentError("malformed", message) from None
    if not isinstance(arguments, dict):
        kind = type(arguments).__name__
        raise ArgumentError("malformed", f"the arguments must be a JSON object, got a {kind}")
    return arguments


def check_arguments(tool: Tool, arguments: dict[str, Any]) -> None:
    """ArgumentError("bad_arguments") saying every way the arguments fail the tool's schema."""
    validator = _validator_class(tool.parameters)(tool.parameters)
    problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
    if problems:
        said = "; ".join(_describe(problem) for problem in problems[:5])
        raise ArgumentError("bad_arguments", f"arguments of {tool.name!r} do not fit: {said}")


def cut(text: str, max_chars: int) -> tuple[str, bool]:
    """`text` cut to `max_chars` characters with a note of what was left out."""
    if len(text) <= max_chars:
        return text, False
    left_out = len(text) - max_chars
    return f"{text[:max_chars]}\n[... {left_out} more characters cut]", True


def error_text(reason: str, message: str) -> str:
    return f"Error ({reason}): {message}"


def _validator_class(schema: dict[str, Any]):
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


def _describe(problem: jsonschema.ValidationError) -> str:
    where = "/".join(str(part) for part in problem.absolute_path)
    return f"{where}: {problem.message}" if where else problem.message
