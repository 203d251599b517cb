"""The built-in `python` tool: the model's code run in the bubblewrap sandbox of
rewards/sandbox.py (`run_program`: no network, no host files, a read-only root with only the
standard library, an empty /tmp as the only writable place, CPU, memory and process limits).

Arguments: `code` (a program) and optional `stdin`. The observation is the exit status, then
stdout and stderr. A program that fails (non-zero status, a traceback) is a normal result the
model should read (`error` None, `info["exit_code"]` set); a program cut at its wall clock is
`error="timeout"`. Without bubblewrap the tool is refused at start unless `allow_unsandboxed`
(then rewards/sandbox.py's LOST_WITHOUT_SANDBOX holds). Left out: packages beyond the standard
library, files that persist between calls.
"""

from __future__ import annotations

from typing import Any

from rewards.sandbox import SandboxLimits, run_program, unsandboxed_refusal
from selfcritic.tools.base import Tool, ToolResult, error_text

SETUP_S = 3.0  # the sandbox's start and clean-up beyond its wall clock (rewards/code.py's too)
PARAMETERS = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "A Python 3 program; print what you need."},
        "stdin": {"type": "string", "description": "Text given to the program on stdin."},
    },
    "required": ["code"],
    "additionalProperties": False,
}


def python_tool(wall_s: float, output_chars: int, allow_unsandboxed: bool = False) -> Tool:
    """The `python` tool, each run cut at `wall_s`; ValueError when it could not run here."""
    refusal = unsandboxed_refusal(allow_unsandboxed)
    if refusal is not None:
        raise ValueError(f"tools.sandbox_python: {refusal}")
    limits = SandboxLimits(wall_s=wall_s, output_chars=output_chars)

    def run(arguments: dict[str, Any]) -> ToolResult:
        code, stdin = arguments["code"], arguments.get("stdin", "")
        result = run_program(code, stdin, limits, allow_unsandboxed)
        info = {"exit_code": result.exit_code, "isolation": result.isolation}
        if result.timed_out:
            message = f"the program ran past {wall_s:g} s and was stopped"
            return ToolResult(error_text("timeout", message), error="timeout", info=info)
        text = (
            f"exit status: {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return ToolResult(text, info=info)

    return Tool(
        name="python",
        description="Run a Python 3 program (standard library only, no network, no files "
        "kept between calls) and see its exit status, stdout and stderr.",
        parameters=PARAMETERS,
        run=run,
        timeout_s=wall_s + SETUP_S,
        source="builtin:python sandbox",
    )
