"""A control group per sandbox: memory, CPU and processes bounded for the whole sandbox.

Resource limits (`setrlimit`) bound each process, so a sample of 32 processes of 512 MB each
could take 16 GB and the host's OOM killer would pick the trainer; and busy processes in new
sessions could starve a concurrent sample of CPU. A cgroup bounds the sandbox as a whole:
`memory_mb` of memory (its /tmp included; no swap), one core of CPU time, `processes` tasks.

Works with cgroup v1 (a hierarchy per controller, as on this project's machines) and v2 (one
unified hierarchy, where the parent's `cgroup.subtree_control` enables the controllers), as
root, under this process's own cgroup. Where neither can be written (no root, a read-only
/sys/fs/cgroup, controllers not delegated), `problem()` says why and the sandbox runs with
per-process limits alone (rewards/sandbox.py says what that loses).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
CONTROLLERS = ("memory", "cpu", "pids")


class SandboxGroup:
    """The cgroup(s) of one sandbox: made with its limits, joined by the sandbox's first
    process before it runs anything, removed when the sandbox has ended."""

    def __init__(self, name: str, memory_mb: int, processes: int) -> None:
        self.directories = [base / name for base in _bases()]
        for directory in self.directories:
            directory.mkdir(exist_ok=True)
            for file, value in _limits(directory, memory_mb, processes):
                (directory / file).write_text(value)

    def join(self) -> None:
        """Move the calling process in (the sandbox's first process, before exec)."""
        for directory in self.directories:
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        """Kill what is left in it, then remove it."""
        for directory in self.directories:
            with contextlib.suppress(OSError):
                for pid in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            for _ in range(200):  # the killed need a moment to leave
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    os.sched_yield()


def _limits(directory: Path, memory_mb: int, processes: int) -> list[tuple[str, str]]:
    memory = str(memory_mb * 1024 * 1024)
    if _unified():
        return [
            ("memory.max", memory),
            ("memory.swap.max", "0"),
            ("cpu.max", f"{PERIOD_US} {PERIOD_US}"),
            ("pids.max", str(processes)),
        ]
    found = []  # a v1 hierarchy may hold one controller or several ("cpu,cpuacct")
    if (directory / "memory.limit_in_bytes").exists():
        found.append(("memory.limit_in_bytes", memory))
        if (directory / "memory.memsw.limit_in_bytes").exists():
            found.append(("memory.memsw.limit_in_bytes", memory))  # no swap either
    if (directory / "cpu.cfs_quota_us").exists():
        found += [("cpu.cfs_period_us", str(PERIOD_US)), ("cpu.cfs_quota_us", str(PERIOD_US))]
    if (directory / "pids.max").exists():
        found.append(("pids.max", str(processes)))
    return found


@functools.cache
def _unified() -> bool:
    return (ROOT / "cgroup.controllers").exists()


@functools.cache
def _bases() -> tuple[Path, ...]:
    """This process's own cgroup directory in each hierarchy that holds a controller we use."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    if _unified():
        path = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        return (ROOT / path.lstrip("/"),)
    bases = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if set(controllers.split(",")) & set(CONTROLLERS):
            bases.append(ROOT / controllers / path.lstrip("/"))
    return tuple(bases)


@functools.cache
def problem() -> str | None:
    """Why per-sandbox cgroups cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    try:
        bases = _bases()
        if _unified():
            enabled = (bases[0] / "cgroup.subtree_control").read_text().split()
            missing = [c for c in CONTROLLERS if c not in enabled]
        else:
            missing = [
                c
                for c in CONTROLLERS
                if not any(c in base.parts[len(ROOT.parts)].split(",") for base in bases)
            ]
        if missing:
            return f"the cgroup controllers {missing} are not available to this process"
        probe = SandboxGroup(f"selfcritic-probe-{os.getpid()}", 64, 4)
        probe.remove()
    except (OSError, StopIteration) as error:
        return f"cannot make a cgroup: {error}"
    return None
