"""The tools settings an environment embeds, and their checks (run before any work).

`ToolsOptions` lists the tool sources of a run; `check_options` refuses a setting that cannot
work (a missing command, a server name used twice, an unreadable YAML file, a bad timeout) with
a message naming its key, before any server starts. A tool schema that is not an object schema
is refused when the tools are loaded, also before any call (base.check_tool).
Left out: which tools a prompt offers (the environment's).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field


@dataclass
class McpServerSpec:
    name: str  # a label for errors, logs and tool sources; unique in a run
    transport: str = "stdio"  # "stdio" (the run starts `command` per episode or once) | "http"
    # argv of the server. A first word `python` means this run's interpreter. For http, the run
    # starts it on a free loopback port written wherever "{port}" appears (and in `url`).
    command: list[str] | None = None
    # http only: the server's URL. With a command: default "http://127.0.0.1:{port}/mcp";
    # without one: an already running server the run connects to (and never stops).
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # over the SDK's minimal environment
    cwd: str | None = None  # the server's working directory (None: the run's)
    # stdio only (an http server's sessions are per episode, its process per run): True
    # starts a fresh server process (and so a fresh session) for every episode; False runs
    # one process for the run, whose one session every episode shares (stdio carries one
    # session per process), so nothing is reset between episodes.
    per_episode_process: bool = True
    startup_timeout_s: float = 30.0  # for the process to listen and a session to open
    tool_prefix: str = ""  # prepended to its tool names (two servers with the same tools)


@dataclass
class ToolsOptions:
    python_functions: list[str] = field(default_factory=list)  # "package.module:function"
    mcp_servers: list[McpServerSpec] = field(default_factory=list)
    synthetic: str | None = None  # a YAML file of synthetic tools (selfcritic/tools/synthetic.py)
    sandbox_python: bool = False  # offer the built-in `python` tool (bubblewrap sandbox)
    allow_unsandboxed: bool = False  # let the `python` tool run without bubblewrap (unsafe)
    call_timeout_s: float = 10.0  # a call running longer is cut (error "timeout")
    max_observation_chars: int = 4000  # an observation is cut to this many characters
    log_dir: str | None = None  # where MCP servers' stderr goes (None: a temporary directory)


def check_options(options: ToolsOptions, key: str = "tools") -> None:
    """ValueError naming the first setting under `key` that cannot work."""
    if not options.call_timeout_s > 0:
        raise ValueError(f"{key}.call_timeout_s must be > 0, got {options.call_timeout_s}")
    if options.max_observation_chars < 1:
        raise ValueError(f"{key}.max_observation_chars must be >= 1")
    for index, path in enumerate(options.python_functions):
        if not isinstance(path, str) or ":" not in path:
            raise ValueError(
                f"{key}.python_functions[{index}]: write {path!r} as 'package.module:function'"
            )
    if options.synthetic is not None and not os.path.isfile(options.synthetic):
        raise ValueError(f"{key}.synthetic: no file {options.synthetic!r}")
    names = set()
    for index, spec in enumerate(options.mcp_servers):
        where = f"{key}.mcp_servers[{index}]"
        check_server(spec, where)
        if spec.name in names:
            raise ValueError(f"{where}.name: {spec.name!r} is used by another server")
        names.add(spec.name)


def check_server(spec: McpServerSpec, where: str) -> None:
    if not spec.name:
        raise ValueError(f"{where}.name: give the server a name")
    if spec.transport not in ("stdio", "http"):
        raise ValueError(f"{where}.transport: 'stdio' or 'http', got {spec.transport!r}")
    if spec.transport == "stdio" and spec.url is not None:
        raise ValueError(f"{where}.url: only for transport http; a stdio server needs a command")
    if spec.command is None:
        if spec.transport == "stdio" or spec.url is None:
            raise ValueError(f"{where}.command: give the server's command (or, for http, a url)")
    else:
        _check_command(spec, where)
    if not spec.startup_timeout_s > 0:
        raise ValueError(f"{where}.startup_timeout_s must be > 0")
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise ValueError(f"{where}.cwd: no directory {spec.cwd!r}")


def resolve_command(command: list[str]) -> list[str]:
    """The argv to run: a first word `python` becomes this run's interpreter."""
    return [sys.executable, *command[1:]] if command[0] == "python" else list(command)


def _check_command(spec: McpServerSpec, where: str) -> None:
    command = spec.command
    if not command or not all(isinstance(word, str) for word in command):
        raise ValueError(f"{where}.command: a non-empty list of strings, got {command!r}")
    program = resolve_command(list(command))[0]
    found = shutil.which(program, path=(spec.env or {}).get("PATH", os.environ.get("PATH")))
    if found is None:
        raise ValueError(f"{where}.command: {program!r} is not an executable file or on PATH")
    if spec.transport == "http" and "{port}" not in " ".join(command) and spec.url is None:
        raise ValueError(
            f'{where}.command: an http server the run starts needs "{{port}}" in its command '
            "(the free port it must listen on), or a fixed `url`"
        )
