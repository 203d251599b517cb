"""A run's private temporary directory, and what killed runs left behind on this machine.

A SIGKILL (the OOM killer, a preempted job, a killed process group) lets no process clean up.
What a run leaves then, and where this module sends it:
- temporary files (vLLM's rendezvous file per engine, wandb's media folders): `enter_scratch`
  gives the driver a directory of its own, `<tmp>/selfcritic-scratch/<pid>-<start time>`, and
  makes it TMPDIR for the driver and every process it starts (a local Ray cluster's workers
  included; Ray's own session directory stays where it was, through RAY_TMPDIR). A driver that
  ends removes it; the next driver to start removes those of drivers no longer alive.
- POSIX semaphores of Python's multiprocessing (`/dev/shm/sem.mp-*`: the verifier pool's
  queues; its resource tracker, which would unlink them, dies in the same kill): removed on
  start when no live process has them mapped (`orphaned_semaphores`).
Left out: Ray's session logs (Ray keeps those by design), files on other nodes of a cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

SCRATCH_ROOT = "selfcritic-scratch"
SHM = Path("/dev/shm")
SEMAPHORE_GLOB = "sem.mp-*"  # how multiprocessing names its semaphores in /dev/shm


def process_tag(pid: int) -> str | None:
    """`<pid>-<start time in clock ticks since boot>`: names one process even after its pid is
    reused; None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return f"{pid}-{fields[19]}"  # field 22 of stat(5), the 20th after the name


def tag_alive(tag: str) -> bool:
    pid, _, _ = tag.partition("-")
    return pid.isdigit() and process_tag(int(pid)) == tag


def sweep_dead_scratch(root: Path) -> list[Path]:
    """Remove the scratch directories under `root` whose driver no longer runs; the removed."""
    removed = []
    for path in root.iterdir() if root.is_dir() else []:
        if path.is_dir() and not tag_alive(path.name):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mapped_inodes() -> set[int]:
    """Inodes of /dev/shm files mapped by the processes whose maps this user can read. Those it
    cannot read (another user's, or the container's init) are not processes it started, and a
    multiprocessing semaphore is shared only within the process tree that created it."""
    inodes: set[int] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue  # the process ended meanwhile, or is not ours to read
        for line in text.splitlines():
            # "start-end perms offset dev inode path": the creator of a named semaphore maps
            # it under a temporary name, shown "(deleted)", so the inode identifies it
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith(str(SHM) + "/"):
                inodes.add(int(fields[4]))
    return inodes


def orphaned_semaphores(shm: Path = SHM) -> list[Path]:
    """This user's multiprocessing semaphores in `shm` that no live process has mapped. The
    candidates are listed before the processes are read: a semaphore is mapped by its creator
    before its name appears, so one created meanwhile is never taken for an orphan."""
    uid = os.getuid()
    candidates = []
    for path in sorted(shm.glob(SEMAPHORE_GLOB)):
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            if info.st_uid == uid:
                candidates.append((path, info.st_ino))
    if not candidates:
        return []
    in_use = mapped_inodes()
    return [path for path, inode in candidates if inode not in in_use]


def sweep_orphaned_semaphores(shm: Path = SHM) -> int:
    """Unlink the orphaned multiprocessing semaphores; how many."""
    count = 0
    for path in orphaned_semaphores(shm):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            count += 1
    return count


def enter_scratch() -> Path:
    """Clean what killed runs left, then make this process's scratch directory TMPDIR (for it
    and the processes it starts from now on); removed when the process exits."""
    base = Path(tempfile.gettempdir())
    root = base / SCRATCH_ROOT
    root.mkdir(parents=True, exist_ok=True)
    sweep_dead_scratch(root)
    sweep_orphaned_semaphores()
    mine = root / (process_tag(os.getpid()) or str(os.getpid()))
    mine.mkdir(exist_ok=True)
    os.environ.setdefault("RAY_TMPDIR", str(base))  # Ray's sessions stay in the usual place
    os.environ["TMPDIR"] = str(mine)
    tempfile.tempdir = None  # recomputed from TMPDIR on next use
    atexit.register(shutil.rmtree, mine, ignore_errors=True)
    return mine
