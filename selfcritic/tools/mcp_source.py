"""MCP servers as tool sources, through the `mcp` SDK: processes, sessions, calls.

Per configured server (`McpServer`), on the runtime's event loop:
- stdio, `per_episode_process` (default): every episode's first call to one of its tools
  starts the command and opens a session on it; the episode's end closes both, so server state
  starts over each episode. At the run's start one such session lists the tools.
- stdio, shared: one process and one session for the run, shared by every episode (stdio
  carries exactly one session per process): nothing is reset between episodes.
- http: the run starts the command once on a free loopback port (or uses the given URL) and
  every episode opens its own session (a new `mcp-session-id`), closed at the episode's end.
Sessions use the initialize handshake (`mode="legacy"`): the 2026-07-28 protocol that mcp 2.x
negotiates by default is sessionless, so a server could not tell episodes apart.
Every process the run starts goes through launcher.py, forked by the event-loop thread, so it
dies with the run, also after a SIGKILL. A call is cut at its timeout (the request cancelled);
the episode's session to that server is then closed too, and its next call opens a new one
(state reset, as the observation says). In the shared stdio session only the request is cut.
Left out: resources, prompts, sampling and elicitation (tools only); authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio

from selfcritic.tools.base import Tool, check_tool
from selfcritic.tools.options import McpServerSpec, resolve_command

LAUNCHER = Path(__file__).with_name("launcher.py")
CLOSE_S = 10.0  # the most a session's close may take (the SDK's own steps are bounded: ~6 s)


class ServerUnavailable(RuntimeError):
    """The server could not be started or reached, or its session broke."""


class McpSession:
    """One open MCP session, held by its own task (the SDK's context must exit in the task
    that entered it); calls come from any task on the same loop."""

    def __init__(self, target: Any, timeout_s: float, label: str):
        self.target, self.timeout_s, self.label = target, timeout_s, label
        self.client = None
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def open(self) -> McpSession:
        from mcp import Client

        ready: asyncio.Future = asyncio.get_running_loop().create_future()

        async def hold() -> None:
            try:
                async with Client(self.target, mode="legacy", cache=None) as client:
                    self.client = client
                    ready.set_result(None)
                    await self._closing.wait()
            except BaseException as error:
                if not ready.done():
                    ready.set_exception(error)
                if not isinstance(error, Exception):
                    raise

        self._task = asyncio.create_task(hold(), name=f"mcp-session-{self.label}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.timeout_s)
        except (Exception, asyncio.CancelledError) as error:
            await self.close()
            if isinstance(error, asyncio.CancelledError):
                raise
            message = f"MCP server {self.label!r}: no session: {_say(error)}"
            raise ServerUnavailable(message) from None
        return self

    async def list_tools(self) -> list[Any]:
        tools, cursor = [], None
        while True:
            page = await self.client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> Any:
        """The CallToolResult; TimeoutError past `timeout_s`, ServerUnavailable when the
        session is gone."""
        if self._task is None or self._task.done():
            raise ServerUnavailable(f"the session to MCP server {self.label!r} has ended")
        with anyio.fail_after(timeout_s):
            try:
                return await self.client.call_tool(name, arguments)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError) as e:
                raise ServerUnavailable(f"MCP server {self.label!r}: {_say(e)}") from e

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_S)
            if not self._task.done():
                self._task.cancel()


class McpServer:
    """One configured server: its process (http, shared stdio), its tools, its sessions."""

    def __init__(self, spec: McpServerSpec, log_dir: str):
        self.spec = spec
        self.log_path = os.path.join(log_dir, f"{_file_name(spec.name)}.log")
        self.tools: list[Tool] = []
        self.url: str | None = spec.url
        self._process: subprocess.Popen | None = None  # an http server the run started
        self._shared: McpSession | None = None  # the shared stdio session
        self._log = None  # stdio servers' stderr, open while the server runs

    @property
    def per_episode(self) -> bool:
        return self.spec.transport == "http" or self.spec.per_episode_process

    async def start(self) -> None:
        """Start what runs for the whole run and list the tools; ServerUnavailable if not."""
        if self.spec.transport == "http" and self.spec.command is not None:
            await self._start_http()
        session = await self.open_session()
        try:
            listed = await asyncio.wait_for(session.list_tools(), self.spec.startup_timeout_s)
        except Exception as error:
            message = f"MCP server {self.spec.name!r}: list_tools: {_say(error)}"
            raise ServerUnavailable(message) from None
        finally:
            if self.per_episode:
                await session.close()
        if not self.per_episode:
            self._shared = session
        self.tools = [self._tool(listed_tool) for listed_tool in listed]

    async def open_session(self) -> McpSession:
        """A new session (per-episode servers), or the shared one."""
        if self._shared is not None:
            return self._shared
        session = McpSession(self._target(), self.spec.startup_timeout_s, self.spec.name)
        try:
            return await session.open()
        except ServerUnavailable as error:
            raise ServerUnavailable(f"{error}{self._log_tail()}") from None

    async def stop(self) -> None:
        """Close the shared session, stop the run's process (sessions of episodes: their own)."""
        if self._shared is not None:
            await self._shared.close()
            self._shared = None
        if self._process is not None:
            await _stop_process(self._process)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _target(self) -> Any:
        if self.spec.transport == "http":
            return self.url
        from mcp import StdioServerParameters
        from mcp.client.stdio import get_default_environment, stdio_client

        command = _launched(resolve_command(self.spec.command))
        parameters = StdioServerParameters(
            command=command[0],
            args=command[1:],
            env={**get_default_environment(), **self.spec.env},
            cwd=self.spec.cwd,
        )
        if self._log is None:
            self._log = open(self.log_path, "a")  # noqa: SIM115 - open until stop()
        return stdio_client(parameters, errlog=self._log)

    async def _start_http(self) -> None:
        from mcp.client.stdio import get_default_environment

        port = _free_port()
        words = [word.replace("{port}", str(port)) for word in resolve_command(self.spec.command)]
        self.url = (self.spec.url or "http://127.0.0.1:{port}/mcp").replace("{port}", str(port))
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                _launched(words),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**get_default_environment(), **self.spec.env},
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        await self._await_listening()

    async def _await_listening(self) -> None:
        address = urlparse(self.url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        deadline = asyncio.get_running_loop().time() + self.spec.startup_timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(
                    f"MCP server {self.spec.name!r} exited with status "
                    f"{self._process.returncode} before listening{self._log_tail()}"
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise ServerUnavailable(
            f"MCP server {self.spec.name!r} did not listen on {host}:{port} within "
            f"startup_timeout_s={self.spec.startup_timeout_s}{self._log_tail()}"
        )

    def _tool(self, listed: Any) -> Tool:
        tool = Tool(
            name=f"{self.spec.tool_prefix}{listed.name}",
            remote_name=listed.name,
            description=listed.description or "",
            parameters=dict(listed.input_schema),
            server=self.spec.name,
            source=f"mcp:{self.spec.name}",
        )
        check_tool(tool)
        return tool

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            tail = Path(self.log_path).read_bytes()[-1500:].decode(errors="replace").strip()
            if tail:
                return f"; its stderr ({self.log_path}) ends:\n{tail}"
        return f"; its stderr is in {self.log_path}"


def observation(result: Any) -> str:
    """A CallToolResult as text: its text parts, other parts named, or its structured content."""
    parts = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        resource = getattr(item, "resource", None)
        if text is not None:
            parts.append(text)
        elif resource is not None and getattr(resource, "text", None) is not None:
            parts.append(resource.text)
        else:
            parts.append(f"[{item.type} {getattr(item, 'mime_type', '') or ''}]".replace(" ]", "]"))
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _launched(command: list[str]) -> list[str]:
    """`command` under launcher.py, which ends it when this process (this thread) dies."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(os.getpid()), "--", *command]


async def _stop_process(process: subprocess.Popen) -> None:
    """SIGTERM to the launcher (which stops the server's group), then SIGKILL if need be."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    for _ in range(100):  # the launcher's own grace is 1 s
        if process.poll() is not None:
            return
        await asyncio.sleep(0.03)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _say(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_say(inner) for inner in error.exceptions)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
