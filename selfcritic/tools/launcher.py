"""Start a tool server so that it cannot outlive the process that asked for it (Linux).

    python -I -S launcher.py PARENT_PID -- COMMAND [ARGS...]

The launcher asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG; the parent
here is the tool runtime's event-loop thread, which lives as long as the runtime), exits at
once if PARENT_PID is already gone (the race before the request), then starts COMMAND in a
process group of its own, itself with PR_SET_PDEATHSIG=SIGKILL, sharing the launcher's stdin,
stdout and stderr (a stdio MCP server talks straight to the runtime). When the parent dies,
or the launcher gets SIGTERM/SIGINT/SIGHUP, it sends SIGTERM to the server's group, SIGKILL
after GRACE_S, and exits; when the server exits, it exits with the server's status.
So a SIGKILL of the run ends the server and everything in its process group within about
GRACE_S. Left out: descendants that leave the group (setsid, daemons); non-Linux systems
(there the launcher just runs the command and says so on stderr).
Standard library only: it runs with -I -S, before any package can load.
"""

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
GRACE_S = 1.0


def _parent_death_signal(signum: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stop(group: int) -> None:
    """SIGTERM to the server's group, SIGKILL to what is left of it after GRACE_S."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and not _reaped(group):
            time.sleep(0.02)
    _kill_group(group)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: launcher.py PARENT_PID -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    if not _parent_death_signal(signal.SIGTERM):
        print("launcher: no PR_SET_PDEATHSIG; the server may outlive the run", file=sys.stderr)
    if os.getppid() != parent:  # the parent died before the request above took effect
        return 1
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        _parent_death_signal(signal.SIGKILL)
        try:
            os.execvp(command[0], command)
        except OSError as error:
            print(f"launcher: cannot start {command[0]!r}: {error}", file=sys.stderr)
            os._exit(127)
    with contextlib.suppress(OSError):  # the child may have set it (and exec'd) already
        os.setpgid(child, child)

    def stop(*_) -> None:
        _stop(child)
        os._exit(143)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except InterruptedError:
            continue
        _kill_group(child)  # what the server left behind in its group
        return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
