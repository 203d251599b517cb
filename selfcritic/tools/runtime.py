"""Runs the tools of a run: `ToolRuntime` (one per run) and `Toolbox` (one per episode).

    with ToolRuntime(options) as runtime:          # checks options, starts servers, lists tools
        prompt_tools = runtime.schemas()           # for the chat template's `tools=`
        box = runtime.episode()                    # a fresh MCP session per server, opened lazily
        result = box.call("add", '{"a": 1, "b": 2}')   # -> ToolResult(text, error, ...)
        results = runtime.call_all([(box, "add", {...}), (other_box, "python", {...})])
        box.close()                                # ends the episode's sessions (and processes)

`call` never raises: a malformed call, an unknown tool, arguments that fail the schema, a tool
that raises, a tool past its timeout and an unreachable server each give a ToolResult whose
`error` is the reason (base.REASONS), whose `text` explains it to the model, and which is
counted in `metrics()`.

Concurrency model: the runtime owns one asyncio event loop on a daemon thread; every call is a
coroutine on it. MCP calls are I/O, so calls of many episodes overlap on that one loop;
Python-function, synthetic and sandbox tools run each call on a fresh daemon thread that the
loop awaits with the timeout. A thread cannot be killed: a hanging function is abandoned at its
timeout (counted in `tools/abandoned_threads`) and runs on until it returns or the run ends; put
code that may hang for good behind an MCP stdio server (a process, killed with its session) or
in the `python` sandbox tool (its own wall clock kills it). `call` blocks its caller thread
only; `call_all` runs a batch (one step's pending calls) concurrently. Toolboxes may be used
from any threads.
Left out: tool-call parsing and episode mechanics (the rollout's), retries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from selfcritic.tools.base import (
    REASONS,
    ArgumentError,
    Tool,
    ToolResult,
    check_arguments,
    cut,
    error_text,
    parse_arguments,
)
from selfcritic.tools.functions import import_tool
from selfcritic.tools.mcp_source import McpServer, McpSession, ServerUnavailable, observation
from selfcritic.tools.options import ToolsOptions, check_options
from selfcritic.tools.sandboxed import python_tool
from selfcritic.tools.synthetic import load_synthetic

QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "mcp")  # the MCP client's, at WARNING
WAIT_MARGIN_S = 30.0  # a caller waits this long past a call's timeout before giving up on it


class ToolRuntime:
    """The tools of a run and the machinery that runs them; close it (or use `with`)."""

    def __init__(self, options: ToolsOptions, tools: Sequence[Tool] = ()):
        check_options(options)
        for name in QUIET_LOGGERS:  # one INFO line per HTTP request would drown the console
            logging.getLogger(name).setLevel(logging.WARNING)
        self.options = options
        local = [*tools, *map(import_tool, options.python_functions)]
        if options.synthetic is not None:
            local += load_synthetic(options.synthetic)
        if options.sandbox_python:
            local.append(
                python_tool(
                    options.call_timeout_s, options.max_observation_chars, options.allow_unsandboxed
                )
            )
        self.log_dir = options.log_dir or tempfile.mkdtemp(prefix="selfcritic-tools-")
        self.servers = {s.name: McpServer(s, self.log_dir) for s in options.mcp_servers}
        self.counts: collections.Counter[str] = collections.Counter()
        self._boxes: set[Toolbox] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tools-loop")
        self._thread.daemon = True
        self._thread.start()
        try:
            for server in self.servers.values():
                self._run(server.start())
            self.tools = _index([*local, *(t for s in self.servers.values() for t in s.tools)])
        except BaseException:
            self.close()
            raise

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool in the function-calling format (chat templates' `tools=`)."""
        return [tool.schema() for tool in self.tools.values()]

    def episode(self) -> Toolbox:
        box = Toolbox(self)
        self._boxes.add(box)
        return box

    def call_all(self, calls: Sequence[tuple[Toolbox, str, Any]]) -> list[ToolResult]:
        """Results of (toolbox, name, arguments) calls, run concurrently, in order."""

        async def every() -> list[ToolResult]:
            return await asyncio.gather(*(self._call(box, n, a) for box, n, a in calls))

        longest = max((self._timeout(name) for _, name, _ in calls), default=0.0)
        try:
            return self._run(every(), longest + WAIT_MARGIN_S)
        except TimeoutError:
            return [self._lost(name, time.monotonic()) for _, name, _ in calls]

    def close_episodes(self, boxes: Sequence[Toolbox]) -> None:
        """End the episodes' sessions (and per-episode server processes) concurrently."""
        boxes = [box for box in boxes if not box.closed]
        for box in boxes:
            box.closed = True

        async def every() -> None:
            await asyncio.gather(*(box.aclose() for box in boxes))

        with contextlib.suppress(TimeoutError):  # sessions' own closes are bounded (CLOSE_S)
            self._run(every(), 60.0)
        self._boxes.difference_update(boxes)

    def metrics(self, reset: bool = False) -> dict[str, float]:
        """{"tools/calls": ..., "tools/errors/<reason>": ..., "tools/truncated": ...,
        "tools/abandoned_threads": ...}; `reset` starts the counts over (per step)."""
        keys = ["calls", "truncated", "abandoned_threads", *(f"errors/{r}" for r in REASONS)]
        found = {f"tools/{key}": float(self.counts[key]) for key in keys}
        if reset:
            self.counts.clear()
        return found

    def close(self) -> None:
        """End every episode's sessions, stop the servers and the loop; idempotent."""
        if not self._thread.is_alive():
            return
        self.close_episodes(list(self._boxes))
        with contextlib.suppress(TimeoutError):
            self._run(self._stop_servers(), 60.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ToolRuntime:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    async def _stop_servers(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)

    def _run(self, coroutine, timeout_s: float | None = None) -> Any:
        if threading.current_thread() is self._thread:
            raise RuntimeError("ToolRuntime: called from its own event loop thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def _timeout(self, name: Any) -> float:
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is not None and tool.timeout_s is not None:
            return tool.timeout_s
        return self.options.call_timeout_s

    async def _call(self, box: Toolbox, name: Any, arguments: Any) -> ToolResult:
        started = time.monotonic()
        try:
            result = await self._outcome(box, name, arguments)
        except Exception as error:  # a fault of ours: the model still gets an observation
            result = ToolResult(error_text("tool_error", f"{type(error).__name__}: {error}"))
            result = _with(result, error="tool_error")
        text, truncated = cut(result.text, self.options.max_observation_chars)
        result = _with(
            result, text=text, truncated=truncated, tool=str(name),
            elapsed_s=time.monotonic() - started,
        )  # fmt: skip
        self.counts["calls"] += 1
        self.counts["truncated"] += truncated
        if result.error is not None:
            self.counts[f"errors/{result.error}"] += 1
        return result

    async def _outcome(self, box: Toolbox, name: Any, arguments: Any) -> ToolResult:
        if not isinstance(name, str) or name not in self.tools:
            known = ", ".join(self.tools) or "none"
            message = f"there is no tool named {name!r}; the tools are: {known}"
            return _failure("unknown_tool", message)
        tool = self.tools[name]
        try:
            arguments = parse_arguments(arguments)
            check_arguments(tool, arguments)
        except ArgumentError as error:
            return _failure(error.reason, str(error))
        timeout_s = self._timeout(name)
        try:
            if tool.run is not None:
                return _as_result(await self._in_thread(tool, arguments, timeout_s))
            return await box.call_server(tool, arguments, timeout_s)
        except TimeoutError:
            return _failure("timeout", f"{name!r} did not finish within {timeout_s:g} s")
        except ServerUnavailable as error:
            return _failure("server_error", str(error))
        except Exception as error:
            return _failure("tool_error", f"{name!r} failed: {type(error).__name__}: {error}")

    async def _in_thread(self, tool: Tool, arguments: dict[str, Any], timeout_s: float) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(value: Any, error: BaseException | None) -> None:
            if not done.done():
                done.set_exception(error) if error is not None else done.set_result(value)

        def work() -> None:
            try:
                value, error = tool.run(arguments), None
            except BaseException as raised:  # noqa: BLE001 - handed to the awaiting call
                value, error = None, raised
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True).start()
        try:
            return await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            self.counts["abandoned_threads"] += 1
            raise

    def _lost(self, name: Any, started: float) -> ToolResult:
        message = "the tool runtime did not answer in time (its event loop is blocked)"
        return _with(_failure("timeout", message), tool=str(name))


class Toolbox:
    """One episode's tools: its own MCP sessions, opened at its first call to each server."""

    def __init__(self, runtime: ToolRuntime):
        self.runtime = runtime
        self.tools = runtime.tools
        self._sessions: dict[str, asyncio.Task] = {}  # server name -> opening/open session
        self.closed = False

    def call(self, name: str, arguments: dict[str, Any] | str | None = None) -> ToolResult:
        """Run one call; never raises (see the module docstring)."""
        return self.runtime.call_all([(self, name, arguments)])[0]

    def close(self) -> None:
        """End the episode's sessions (and per-episode server processes); waits for them.
        Many at once: `runtime.close_episodes(boxes)`."""
        self.runtime.close_episodes([self])

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.items()), {}
        await asyncio.gather(*(self._end(name, task) for name, task in sessions))

    async def call_server(self, tool: Tool, arguments: dict[str, Any], timeout_s: float):
        if self.closed:
            raise ServerUnavailable("this episode's toolbox is closed")
        server = self.runtime.servers[tool.server]
        session = await self._session(server)
        try:
            result = await session.call(tool.remote_name or tool.name, arguments, timeout_s)
        except TimeoutError:
            if not server.per_episode:  # the shared session stays: only the request is cut
                raise
            # the session may be wedged: end it, and the next call opens a new one
            await self._end(server.spec.name, self._sessions.pop(server.spec.name, None))
            message = (
                f"{tool.name!r} did not finish within {timeout_s:g} s; its server session was "
                "closed, and the next call opens a new one (the server's state starts over)"
            )
            return _failure("timeout", message)
        text = observation(result)
        if result.is_error:
            return _failure("tool_error", text or f"{tool.name!r} failed")
        return ToolResult(text)

    async def _session(self, server: McpServer) -> McpSession:
        name = server.spec.name
        if name not in self._sessions:
            self._sessions[name] = asyncio.ensure_future(server.open_session())
        try:
            return await asyncio.shield(self._sessions[name])
        except ServerUnavailable:
            self._sessions.pop(name, None)  # the next call tries again
            raise

    async def _end(self, name: str, task: asyncio.Task | None) -> None:
        if task is None or not self.runtime.servers[name].per_episode:
            return
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await (await task).close()


def _index(tools: list[Tool]) -> dict[str, Tool]:
    index: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in index:
            raise ValueError(
                f"two tools are named {tool.name!r}: from {index[tool.name].source} and from "
                f"{tool.source}; rename one (or leave one source out)"
            )
        index[tool.name] = tool
    return index


def _as_result(value: Any) -> ToolResult:
    return value if isinstance(value, ToolResult) else ToolResult(str(value))


def _failure(reason: str, message: str) -> ToolResult:
    return ToolResult(error_text(reason, message), error=reason)


def _with(result: ToolResult, **changes: Any) -> ToolResult:
    import dataclasses

    return dataclasses.replace(result, **changes)
