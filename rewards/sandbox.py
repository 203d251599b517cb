"""Run model-written Python against unit tests, contained.

Every run gets:
- a new network namespace (no interface but a down loopback: nothing can be reached), a new PID
  namespace (host processes are invisible; when the run ends the kernel kills every process left
  in it, so nothing can detach and outlive the run) and a new mount namespace in which /tmp,
  /var/tmp, /dev/shm, /root and /home are fresh empty tmpfs mounts: files written there vanish
  with the run, and the real home directory cannot be read;
- an unprivileged user (nobody), so it can neither signal the trainer nor write where nobody may;
- limits: CPU seconds, address space, processes (per user), file size (which also caps stdout
  and stderr, written to files), open files, no core dumps;
- a wall-clock timeout after which its whole process group is killed.
Namespaces need root (true on this project's machines and CI); without root, or where `unshare`
fails, the run falls back to limits only, as the current user, with network access, and says so
in `RunResult.isolation` (and docs/rewards.md says so plainly).

Results are read only from a private channel: the harness writes "<nonce> PASS <test>" lines to
file descriptor 3, with a nonce sent on stdin that the code under test never sees printed. So
printing a fake test summary, or exiting before the tests run, scores nothing. Left out: code
that introspects the harness's own frames to steal the nonce can still forge results (tests run
in the same interpreter as the code); running each test in its own process is the fix.
"""

from __future__ import annotations

import ast
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The code runs as `nobody`, who cannot enter root's home, where this machine's own Python and
# virtual environment may live: the system interpreter runs it (the tests need only the stdlib).
SYSTEM_PYTHON = "/usr/bin/python3"
HARNESS = Path(__file__).parent / "sandbox_files" / "harness.py"
LAUNCHER = Path(__file__).parent / "sandbox_files" / "launcher.py"
NOBODY = 65534


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0  # wall-clock timeout for the whole run
    cpu_s: int = 5  # CPU seconds per process
    memory_mb: int = 512  # address space per process
    processes: int = 32  # processes of the sandbox user
    file_mb: int = 8  # largest file it may write (stdout and stderr included)
    output_chars: int = 4000  # stdout/stderr kept in the result


@dataclass(frozen=True)
class RunResult:
    passed: list[str]
    failed: list[str]
    total: int  # test functions in the tests source (counted by the host, not the harness)
    timed_out: bool
    exit_code: int | None
    stdout: str
    stderr: str
    isolation: str  # "namespaces" or "limits-only"


def count_tests(tests_source: str) -> list[str]:
    """Names of the top-level `test_*` functions, read from the source with `ast`."""
    try:
        tree = ast.parse(tests_source)
    except SyntaxError:
        return []
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


@functools.cache
def namespaces_available() -> bool:
    """True when this process may create network, PID and mount namespaces."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child", "true"]
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


def _limits(limits: SandboxLimits):
    import resource

    def apply() -> None:
        os.setsid()  # its own process group: the timeout kills all of it
        mb = 1024 * 1024
        for kind, value in (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_AS, limits.memory_mb * mb),
            (resource.RLIMIT_NPROC, limits.processes),
            (resource.RLIMIT_FSIZE, limits.file_mb * mb),
            (resource.RLIMIT_NOFILE, 64),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(kind, (value, value))

    return apply


def run_tests(code: str, tests: str, limits: SandboxLimits = SandboxLimits()) -> RunResult:
    """Run `tests` (top-level test_* functions importing `solution`) against `code`."""
    names = count_tests(tests)
    isolated = namespaces_available()
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="selfcritic-sandbox-") as work:
        work_dir = Path(work)
        (work_dir / "solution.py").write_text(code)
        (work_dir / "tests.py").write_text(tests)
        shutil.copy(HARNESS, work_dir / "harness.py")
        with (
            open(work_dir / "stdout", "w+b") as out,
            open(work_dir / "stderr", "w+b") as err,
            open(work_dir / "results", "w+b") as res,
        ):
            command = _command(work_dir, isolated)
            timed_out, code_ = _execute(command, nonce, out, err, res, limits, work_dir, isolated)
            passed, failed = _read_results(res, nonce)
            stdout, stderr = (_head(f, limits.output_chars) for f in (out, err))
    return RunResult(
        passed=[n for n in passed if n in names],
        failed=failed,
        total=len(names),
        timed_out=timed_out,
        exit_code=code_,
        stdout=stdout,
        stderr=stderr,
        isolation="namespaces" if isolated else "limits-only",
    )


def _command(work_dir: Path, isolated: bool) -> list[str]:
    python = [sys.executable, "-I", "-S"]  # isolated mode: no user site, no env PYTHON* vars
    if not isolated:
        return [*python, str(work_dir / "harness.py")]
    namespaces = ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child"]
    target = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    return [*namespaces, *python, str(LAUNCHER), str(work_dir), str(NOBODY), target]


def _execute(command, nonce, out, err, res, limits, work_dir, isolated):
    """Run with the nonce on stdin and results on fd 3; kill the group after the timeout."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=err,
        pass_fds=(res.fileno(),),
        cwd=work_dir,
        preexec_fn=_limits(limits),
        env={"PATH": "/usr/bin:/bin", "SANDBOX_RESULT_FD": str(res.fileno())},
    )
    try:
        process.communicate(nonce.encode() + b"\n", timeout=limits.wall_s)
        return False, process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its group: launcher, harness and children
        process.wait()
        return True, None


def _read_results(res, nonce: str) -> tuple[list[str], list[str]]:
    res.seek(0)
    passed, failed = [], []
    for line in res.read(1_000_000).decode(errors="replace").splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == nonce:
            (passed if parts[1] == "PASS" else failed).append(parts[2])
    return passed, failed


def _head(stream, chars: int) -> str:
    stream.seek(0)
    return stream.read(chars * 4).decode(errors="replace")[:chars]
