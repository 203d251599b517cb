"""A small MCP server with deterministic tools, for tests and the `tools_quick` experiment.

    python selfcritic/tools/servers/calculator.py                    # stdio
    python selfcritic/tools/servers/calculator.py --http --port 8123  # streamable HTTP, /mcp
    ... --test-tools                                                 # also `sleep` and `fail`
    ... --tools add                                                  # only the tools named

Tools: `add(a, b)`, `multiply(a, b)`, `lookup(name)` (a constant from a fixed table) and
`count()`, which returns how many times it was called in this MCP session: 1 on the first call
of every new session, which is how the per-episode session reset is seen. Over HTTP the session
is the `mcp-session-id` header (a new one per initialize handshake); over stdio a process
serves exactly one session, so a process-wide counter is the session's.
With --test-tools: `sleep(seconds)` (a tool that hangs) and `fail(message)` (one that raises).
`--tools NAME,NAME` serves only those (the tool world offers `add` alone: a character model pays
for every character of the tool list in its prompt).
Imports only the `mcp` package and the standard library, so it runs as a plain script with
any interpreter that has `mcp`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

CONSTANTS = {"pi": 3.14159, "e": 2.71828, "answer": 42, "dozen": 12}

server = MCPServer("calculator", log_level="WARNING")
calls_by_session: collections.Counter[str] = collections.Counter()


def add(a: float, b: float) -> float | int:
    """Add two numbers."""
    total = a + b  # a whole sum as a whole number, "129" not "129.0": what a model copies
    return int(total) if float(total).is_integer() else total


def multiply(a: float, b: float) -> float | int:
    """Multiply two numbers."""
    product = a * b
    return int(product) if float(product).is_integer() else product


def lookup(name: str) -> str:
    """The value of a named constant (pi, e, answer, dozen)."""
    if name not in CONSTANTS:
        raise ToolError(f"unknown constant {name!r}; known: {', '.join(sorted(CONSTANTS))}")
    return str(CONSTANTS[name])


def count(ctx: Context) -> int:
    """How many times this tool was called in this session (this call included)."""
    session = (ctx.headers or {}).get("mcp-session-id", "stdio")
    calls_by_session[session] += 1
    return calls_by_session[session]


async def sleep(seconds: float) -> str:
    """Wait `seconds` seconds, then answer."""
    await asyncio.sleep(seconds)
    return f"slept {seconds} s"


def fail(message: str) -> str:
    """Fail with `message`."""
    raise ToolError(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--test-tools", action="store_true", help="add `sleep` and `fail`")
    parser.add_argument("--tools", help="serve only these tools (comma-separated names)")
    options = parser.parse_args()
    tools = [add, multiply, lookup, count] + ([sleep, fail] if options.test_tools else [])
    if options.tools:
        names = options.tools.split(",")
        unknown = sorted(set(names) - {tool.__name__ for tool in tools})
        if unknown:
            parser.error(f"--tools: no tool named {', '.join(unknown)}")
        tools = [tool for tool in tools if tool.__name__ in names]
    for tool in tools:
        server.tool()(tool)
    if options.http:
        server.run("streamable-http", host=options.host, port=options.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
