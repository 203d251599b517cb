"""The code sandbox against model-written code that misbehaves.

Each case runs real code in the real sandbox (namespaces as root, limits, unprivileged user) and
asserts it was contained within its timeout and scored nothing it did not earn.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

import pytest

from rewards.code import extract_code, python_tests
from rewards.sandbox import SandboxLimits, count_tests, namespaces_available, run_tests

TESTS = """
from solution import add

def test_small():
    assert add(1, 2) == 3

def test_negative():
    assert add(-1, -1) == -2
"""
LIMITS = SandboxLimits(wall_s=6.0, cpu_s=3)


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After every case: no sandbox process alive, no sandbox directory left in /tmp."""
    before = set(Path(tempfile.gettempdir()).glob("selfcritic-sandbox-*"))
    yield
    time.sleep(0.3)
    assert _processes_of_uid(65534) == []
    assert set(Path(tempfile.gettempdir()).glob("selfcritic-sandbox-*")) <= before


def run(code: str, limits: SandboxLimits = LIMITS):
    start = time.monotonic()
    result = run_tests(code, TESTS, limits)
    return result, time.monotonic() - start


def test_correct_and_partial_solutions():
    right, _ = run("def add(a, b):\n    return a + b\n")
    assert sorted(right.passed) == ["test_negative", "test_small"] and right.total == 2
    partial, _ = run("def add(a, b):\n    return abs(a) + abs(b)\n")
    assert partial.passed == ["test_small"] and partial.failed == ["test_negative"]
    fenced = "Here:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    assert python_tests(fenced, TESTS).score == 1.0
    assert python_tests("def add(a, b):\n    return a\n", TESTS).score == 0.0
    half = "def add(a, b):\n    return abs(a) + abs(b)\n"
    assert python_tests(half, TESTS).score == 0.5
    assert python_tests(half, TESTS, all_or_nothing=True).score == 0.0


def test_runs_isolated_here():
    assert namespaces_available(), "this project's machines run as root with unshare"
    result, _ = run("def add(a, b):\n    return a + b\n")
    assert result.isolation == "namespaces"


def test_infinite_loop_is_stopped():
    result, seconds = run("while True:\n    pass\n")
    assert result.passed == [] and seconds < LIMITS.wall_s + 3


def test_fork_bomb_is_contained():
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result, seconds = run(code)
    assert result.passed == [] and seconds < LIMITS.wall_s + 3
    time.sleep(0.5)
    assert _processes_of_uid(65534) == []


def test_memory_bomb_is_refused():
    result, seconds = run("block = bytearray(8 * 1024**3)\ndef add(a, b):\n    return a + b\n")
    assert result.passed == [] and "MemoryError" in result.stderr


def test_writes_outside_the_run_directory_do_not_land(tmp_path):
    targets = [
        Path("/tmp") / f"escape-{secrets.token_hex(4)}",
        tmp_path / "escape",
        Path(__file__).parent / "escape",
    ]
    code = (
        "".join(
            f"try:\n    open({str(t)!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
            for t in targets
        )
        + "def add(a, b):\n    return a + b\n"
    )
    result, _ = run(code)
    assert len(result.passed) == 2  # the code ran
    assert not any(t.exists() for t in targets)


def test_home_directory_is_unreadable():
    secret_file = Path.home() / f".selfcritic-secret-{secrets.token_hex(4)}"
    secret = secrets.token_hex(16)
    secret_file.write_text(secret)
    try:
        code = (
            f"try:\n    print(open({str(secret_file)!r}).read())\nexcept OSError as e:\n"
            f"    print('denied', e)\ndef add(a, b):\n    return a + b\n"
        )
        result, _ = run(code)
    finally:
        secret_file.unlink()
    assert secret not in result.stdout + result.stderr
    assert "denied" in result.stdout


def test_network_is_unreachable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = (
        f"import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), 1)\n"
        "    s.sendall(b'stolen')\nexcept OSError as e:\n    print('blocked', e)\n"
        "def add(a, b):\n    return a + b\n"
    )
    result, _ = run(code)
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing arrived
    listener.close()
    assert "blocked" in result.stdout


def test_huge_output_is_capped():
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    result, seconds = run(code)
    assert result.passed == [] and seconds < LIMITS.wall_s + 3
    assert len(result.stdout) <= LIMITS.output_chars


def test_cannot_kill_the_trainer():
    code = (
        f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGKILL)\nexcept OSError:\n"
        "    pass\ndef add(a, b):\n    return a + b\n"
    )
    result, _ = run(code)
    assert len(result.passed) == 2  # and this test process is still here to assert it


def test_detached_process_does_not_outlive_the_run():
    marker = f"detached-{secrets.token_hex(6)}"
    code = (
        "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
        f"'import time; time.sleep(60)  # {marker}'], start_new_session=True)\n"
        "def add(a, b):\n    return a + b\n"
    )
    result, _ = run(code)
    assert len(result.passed) == 2
    time.sleep(0.5)
    assert not [pid for pid, cmd in _cmdlines() if marker in cmd]


def test_early_exit_claiming_success_scores_nothing():
    code = "import os\nprint('2 passed')\nos._exit(0)\n"
    result, _ = run(code)
    assert result.passed == [] and python_tests(code, TESTS).score == 0.0


def test_fake_test_summary_scores_nothing():
    code = (
        "import os\nprint('===== 2 passed in 0.01s =====')\n"
        "for name in ('test_small', 'test_negative'):\n"
        "    os.write(3, f'00000000 PASS {name}\\n'.encode())\n"
        "def add(a, b):\n    return 0\n"
    )
    result, _ = run(code)
    assert result.passed == []
    assert python_tests(code, TESTS).score == 0.0


def test_helpers():
    assert count_tests(TESTS) == ["test_small", "test_negative"]
    assert count_tests("def test_(:") == []
    assert extract_code("a\n```py\nx = 1\n```\nb\n```python\ny = 2\n```") == "y = 2\n"


def _cmdlines():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield (
                    int(entry.name),
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(),
                )
            except OSError:
                continue


def _processes_of_uid(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
