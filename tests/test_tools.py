"""The tools layer (selfcritic/tools/): real MCP servers (stdio and loopback HTTP) started
from the tests, per-episode session reset, every fault as an error result with its reason,
synthetic tools, the sandboxed python tool, and no server outliving its runtime or a
SIGKILLed parent."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path
from typing import Literal

import pytest

from selfcritic.tools import McpServerSpec, ToolRuntime, ToolsOptions, function_tool
from selfcritic.tools.synthetic import load_synthetic

REPO = Path(__file__).resolve().parents[1]
CALCULATOR = str(REPO / "selfcritic" / "tools" / "servers" / "calculator.py")
TIMEOUT_S = 1.0


def servers() -> list[McpServerSpec]:
    """The calculator three ways: stdio per episode, stdio shared, HTTP on a free port."""
    return [
        McpServerSpec("calc", command=["python", CALCULATOR, "--test-tools"]),
        McpServerSpec(
            "shared", command=["python", CALCULATOR], per_episode_process=False,
            tool_prefix="shared_",
        ),
        McpServerSpec(
            "web", transport="http", command=["python", CALCULATOR, "--http", "--port", "{port}"],
            tool_prefix="web_",
        ),
    ]  # fmt: skip


def add_ints(a: int, b: int = 10) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def explode(reason: str) -> str:
    raise KeyError(reason)


def hang(seconds: float) -> str:
    time.sleep(seconds)
    return "woke up"


@pytest.fixture(scope="module")
def runtime():
    local = [function_tool(add_ints), function_tool(explode), function_tool(hang)]
    options = ToolsOptions(mcp_servers=servers(), call_timeout_s=TIMEOUT_S)
    with ToolRuntime(options, tools=local) as started:
        yield started


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            state, parent = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                children.setdefault(int(parent), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            living.add(pid)
    return living


def servers_of(pid: int) -> set[int]:
    def command(p: int) -> str:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    return {p for p in descendants(pid) if "calculator.py" in command(p)}


def launched_servers(pid: int) -> set[int]:
    """The calculator servers under `pid`, without their launchers."""
    return {
        p for p in servers_of(pid) if "launcher.py" not in Path(f"/proc/{p}/cmdline").read_text()
    }


# --- Python functions and the faults every call is guarded against ---------------------------


def test_function_schema_from_signature():
    def pick(name: str, times: int, mode: Literal["a", "b"] = "a", tags: list[str] | None = None):
        """Pick something.

        Args:
            name: what to pick
        """

    assert function_tool(pick).parameters == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "what to pick"},
            "times": {"type": "integer"},
            "mode": {"enum": ["a", "b"]},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        },
        "required": ["name", "times"],
    }
    assert function_tool(pick).description == "Pick something."
    unhinted = function_tool(lambda when: None, name="t").parameters
    assert unhinted["properties"] == {"when": {}}  # no hint: any JSON value

    def dated(when: date) -> None: ...

    with pytest.raises(ValueError, match="parameter 'when'.*pass parameters="):
        function_tool(dated)


def test_each_fault_is_an_error_result_with_its_reason(runtime):
    box = runtime.episode()
    runtime.metrics(reset=True)
    started = time.monotonic()
    results = {
        "ok": box.call("add_ints", '{"a": 5}'),
        "malformed": box.call("add_ints", '{"a": 5'),
        "not_object": box.call("add_ints", "[5]"),
        "unknown_tool": box.call("subtract", {"a": 1}),
        "bad_arguments": box.call("add_ints", {"a": "five"}),
        "missing": box.call("add_ints", {"b": 1}),
        "tool_error": box.call("explode", {"reason": "gone"}),
    }
    assert time.monotonic() - started < 1.0  # none of these waits on a timeout
    assert (results["ok"].text, results["ok"].error) == ("15", None)
    expected = {
        "malformed": "malformed", "not_object": "malformed", "unknown_tool": "unknown_tool",
        "bad_arguments": "bad_arguments", "missing": "bad_arguments", "tool_error": "tool_error",
    }  # fmt: skip
    assert {k: r.error for k, r in results.items() if k != "ok"} == expected
    assert "not valid JSON" in results["malformed"].text
    assert "must be a JSON object, got a list" in results["not_object"].text
    assert "no tool named 'subtract'" in results["unknown_tool"].text
    assert "'five' is not of type 'integer'" in results["bad_arguments"].text
    assert "'a' is a required property" in results["missing"].text
    assert "KeyError" in results["tool_error"].text and "gone" in results["tool_error"].text
    hung = box.call("hang", {"seconds": 5})
    assert hung.error == "timeout" and TIMEOUT_S <= hung.elapsed_s < TIMEOUT_S + 0.5
    metrics = runtime.metrics()
    assert metrics["tools/calls"] == 8
    assert metrics["tools/errors/malformed"] == 2 and metrics["tools/errors/bad_arguments"] == 2
    assert metrics["tools/errors/timeout"] == 1 and metrics["tools/abandoned_threads"] == 1
    box.close()


def test_long_observations_are_cut():
    options = ToolsOptions(max_observation_chars=10)
    with ToolRuntime(options, tools=[function_tool(lambda n: "x" * n, name="xs")]) as runtime:
        result = runtime.episode().call("xs", {"n": 25})
    assert result.truncated and result.text == "x" * 10 + "\n[... 15 more characters cut]"
    assert runtime.metrics()["tools/truncated"] == 1


# --- MCP servers ------------------------------------------------------------------------------


def test_mcp_servers_list_their_schemas_and_answer(runtime):
    schemas = {s["function"]["name"]: s["function"] for s in runtime.schemas()}
    assert {"add", "multiply", "lookup", "count", "sleep", "fail"} <= schemas.keys()
    assert {"shared_add", "web_add", "web_count"} <= schemas.keys()
    for name in ("add", "web_add"):
        parameters = schemas[name]["parameters"]
        assert parameters["properties"]["a"]["type"] == "number"
        assert sorted(parameters["required"]) == ["a", "b"]
        assert schemas[name]["description"] == "Add two numbers."
    box = runtime.episode()
    assert box.call("add", {"a": 2, "b": 3.5}).text == "5.5"  # stdio
    assert box.call("web_multiply", '{"a": 4, "b": 2.5}').text == "10"  # HTTP: a whole product
    assert box.call("shared_lookup", {"name": "answer"}).text == "42"
    box.close()


def test_each_episode_gets_a_fresh_session(runtime):
    first, second = runtime.episode(), runtime.episode()
    for name in ("count", "web_count"):
        assert [first.call(name).text for _ in range(3)] == ["1", "2", "3"]
        assert second.call(name).text == "1"  # a new session: the server's count starts over
    shared = [first.call("shared_count").text, second.call("shared_count").text]
    assert shared == ["1", "2"]  # per_episode_process=False: one session for all episodes
    first.close()
    second.close()
    third = runtime.episode()
    assert [third.call("count").text, third.call("web_count").text] == ["1", "1"]
    third.close()


def test_calls_of_episodes_overlap(runtime):
    boxes = [runtime.episode() for _ in range(4)]
    runtime.call_all([(box, "web_count", {}) for box in boxes])  # sessions opened
    started = time.monotonic()
    results = runtime.call_all([(box, "hang", {"seconds": 0.5}) for box in boxes])
    assert [r.text for r in results] == ["woke up"] * 4
    assert time.monotonic() - started < 1.5  # 4 x 0.5 s one after another would be 2 s
    for box in boxes:
        box.close()


def test_mcp_faults_become_error_results(runtime):
    box = runtime.episode()
    assert box.call("count").text == "1"
    failed = box.call("fail", {"message": "disk on fire"})
    assert failed.error == "tool_error" and "disk on fire" in failed.text
    missing = box.call("lookup", {"name": "tau"})
    assert missing.error == "tool_error" and "unknown constant 'tau'" in missing.text
    assert box.call("add", {"a": "two", "b": 1}).error == "bad_arguments"  # checked here
    hung = box.call("sleep", {"seconds": 30})
    assert hung.error == "timeout" and TIMEOUT_S <= hung.elapsed_s < TIMEOUT_S + 3.0
    assert "state starts over" in hung.text
    assert box.call("count").text == "1"  # the cut session was replaced by a new one
    box.close()


# --- synthetic tools --------------------------------------------------------------------------

SYNTHETIC = """
seed: 7
tools:
  - name: get_weather
    description: Current weather of a city.
    parameters:
      type: object
      properties: {city: {type: string}, unit: {type: string, enum: [c, f]}}
      required: [city]
    result:
      key: [city]
      table: {Paris: {temperature: 18, sky: cloudy}}
      generate: {temperature: {int: [-10, 35]}, sky: {choice: [sunny, cloudy, rain]}}
      template: "{city}: {temperature} degrees {unit}, {sky}"
  - name: find_user
    description: A user's record.
    parameters: {type: object, properties: {email: {type: string}}, required: [email]}
    result:
      table: {ada@example.com: {name: Ada, plan: pro}}
      missing: "No user with email {email}."
"""


def expected_int(seed, tool, field, key, low, high):
    """The documented formula, worked out here on its own."""
    text = f"{seed}\0{tool}\0{field}\0{json.dumps(key, sort_keys=True, separators=(',', ':'))}"
    u = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return low + u % (high - low + 1)


def test_synthetic_tools_are_deterministic(tmp_path):
    path = tmp_path / "tools.yaml"
    path.write_text(SYNTHETIC)
    with ToolRuntime(ToolsOptions(synthetic=str(path))) as runtime:
        box = runtime.episode()
        paris = box.call("get_weather", {"city": "Paris", "unit": "c"}).text
        oslo = box.call("get_weather", {"city": "Oslo"}).text
        assert box.call("find_user", {"email": "ada@example.com"}).text == (
            '{"name": "Ada", "plan": "pro"}'
        )
        assert box.call("find_user", {"email": "bob@x.org"}).text == "No user with email bob@x.org."
    assert paris == "Paris: 18 degrees c, cloudy"  # the table's row
    temperature = expected_int(7, "get_weather", "temperature", {"city": "Oslo"}, -10, 35)
    assert oslo.startswith(f"Oslo: {temperature} degrees , ")
    assert oslo.split(", ")[-1] in ("sunny", "cloudy", "rain")
    again = subprocess.run(  # another interpreter, another hash seed: the same text
        [sys.executable, "-c", textwrap.dedent(f"""
            from selfcritic.tools.synthetic import load_synthetic
            (tool,) = [t for t in load_synthetic({str(path)!r}) if t.name == "get_weather"]
            print(tool.run({{"city": "Oslo"}}))
        """)],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert again.stdout.strip() == oslo


@pytest.mark.parametrize(
    "text, named",
    [
        ("tools: [", "is not valid YAML"),
        ("tools:\n  - {name: t, description: d, parameters: {type: string}}", "object schema"),
        (
            "tools:\n  - name: t\n    description: d\n    parameters: {type: object}\n"
            "    result: {template: '{nope}'}",
            r"tools\[0\] \(t\)\.result\.template: \{nope\}",
        ),
        (
            "tools:\n  - name: t\n    description: d\n    parameters: {type: object}\n"
            "    result: {generate: {x: {int: [5, 1]}}}",
            r"result\.generate\.x\.int: expected \[low, high\]",
        ),
    ],
)
def test_synthetic_file_errors_name_the_key(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=named):
        load_synthetic(str(path))


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, named",
    [
        (ToolsOptions(call_timeout_s=0), r"tools\.call_timeout_s"),
        (ToolsOptions(synthetic="/no/such.yaml"), r"tools\.synthetic: no file"),
        (ToolsOptions(python_functions=["json.dumps"]), r"tools\.python_functions\[0\]"),
        (
            ToolsOptions(mcp_servers=[McpServerSpec("x", command=["no-such-server-binary"])]),
            r"tools\.mcp_servers\[0\]\.command: 'no-such-server-binary' is not an executable",
        ),
        (
            ToolsOptions(mcp_servers=[McpServerSpec("x", transport="http", command=["python"])]),
            r"tools\.mcp_servers\[0\]\.command: .*\{port\}",
        ),
        (
            ToolsOptions(mcp_servers=[McpServerSpec("x", transport="sse", command=["python"])]),
            r"tools\.mcp_servers\[0\]\.transport",
        ),
    ],
)
def test_bad_options_fail_before_any_work(options, named):
    before = servers_of(os.getpid())
    with pytest.raises(ValueError, match=named):
        ToolRuntime(options)
    assert servers_of(os.getpid()) == before


def test_a_server_that_dies_at_start_is_reported_with_its_stderr(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('cannot find my config', file=sys.stderr)\nsys.exit(3)\n")
    spec = McpServerSpec("broken", command=["python", str(crash)], startup_timeout_s=10)
    with pytest.raises(RuntimeError, match="(?s)'broken'.*cannot find my config"):
        ToolRuntime(ToolsOptions(mcp_servers=[spec], log_dir=str(tmp_path)))


# --- the sandboxed python tool ----------------------------------------------------------------


def test_python_tool_runs_in_the_sandbox():
    from rewards.sandbox import sandbox_problem

    if sandbox_problem() is not None:
        pytest.skip(sandbox_problem())
    target = REPO / f".escaped-{os.getpid()}.txt"  # writable on the host, by this process
    code = f"print(6 * 7)\nopen({str(target)!r}, 'w').write('out')"
    with ToolRuntime(ToolsOptions(sandbox_python=True, call_timeout_s=5)) as runtime:
        result = runtime.episode().call("python", {"code": code})
    assert result.error is None and result.text.startswith("exit status: 1\nstdout:\n42\n")
    refused = result.text.split("stderr:", 1)[1]
    assert "Read-only file system" in refused or "No such file" in refused
    assert not target.exists()


# --- process lifetime -------------------------------------------------------------------------


def test_no_server_outlives_close():
    options = ToolsOptions(mcp_servers=servers()[::2])  # stdio per episode and HTTP
    before = servers_of(os.getpid())  # the module's runtime's
    runtime = ToolRuntime(options)
    box = runtime.episode()
    assert [box.call("count").text, box.call("web_count").text] == ["1", "1"]
    running = servers_of(os.getpid()) - before  # servers and their launchers
    assert len(running & launched_servers(os.getpid())) == 2  # HTTP, this episode's stdio
    runtime.close()  # the episode is still open: close ends it too
    assert alive(running) == set()


def test_no_server_outlives_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_tools import servers
        from selfcritic.tools import ToolRuntime, ToolsOptions
        runtime = ToolRuntime(ToolsOptions(mcp_servers=servers()))
        box = runtime.episode()
        print(box.call("count").text, flush=True)
        time.sleep(60)
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "1"
        running = servers_of(parent.pid)  # servers and their launchers
        assert len(launched_servers(parent.pid)) == 3  # shared stdio, HTTP, episode's stdio
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5.0
    while alive(running) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(running) == set()
