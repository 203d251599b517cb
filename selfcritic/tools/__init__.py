"""Tools for agentic episodes: Python functions, MCP servers, synthetic YAML tools and the
sandboxed `python` tool, run with timeouts and error observations (docs/agentic.md, "Tools").

The API a caller needs: `ToolsOptions` (+ `McpServerSpec`), `ToolRuntime(options)` for the run,
`runtime.episode()` -> `Toolbox` per episode, `Toolbox.call(name, arguments) -> ToolResult`,
`runtime.call_all(...)`, `runtime.schemas()`, `runtime.metrics()`. Modules import only the
standard library, `mcp`, `jsonschema`, `yaml` and rewards.sandbox; never the trainer.
"""

from selfcritic.tools.base import REASONS, Tool, ToolResult
from selfcritic.tools.functions import function_tool, import_tool
from selfcritic.tools.options import McpServerSpec, ToolsOptions, check_options
from selfcritic.tools.runtime import Toolbox, ToolRuntime

__all__ = [
    "REASONS",
    "McpServerSpec",
    "Tool",
    "ToolResult",
    "ToolRuntime",
    "Toolbox",
    "ToolsOptions",
    "check_options",
    "function_tool",
    "import_tool",
]
