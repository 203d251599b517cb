"""What a killed run leaves: orphaned semaphores, dead drivers' scratch directories, and
append-only records past the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from selfcritic.scratch import (
    orphaned_semaphores,
    process_tag,
    sweep_dead_scratch,
    sweep_orphaned_semaphores,
    tag_alive,
)
from selfcritic.tracking import truncate_records

# A process holding a spawn-context lock (a named POSIX semaphore, as the verifier pool's
# queues hold), printing its name and waiting to be killed.
_HOLDER = """
import multiprocessing, sys, time
lock = multiprocessing.get_context("spawn").Lock()
print("/dev/shm/sem." + lock._semlock.name.lstrip("/"), flush=True)
time.sleep(120)
"""


def _holder() -> tuple[subprocess.Popen, str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    return holder, holder.stdout.readline().strip()


def test_a_killed_holders_semaphore_is_orphaned_and_swept_a_live_ones_is_not():
    live, live_name = _holder()
    killed, killed_name = _holder()
    try:
        os.killpg(killed.pid, signal.SIGKILL)  # its resource tracker dies with it
        killed.wait()
        orphans = [str(p) for p in orphaned_semaphores()]
        assert killed_name in orphans and live_name not in orphans
        assert sweep_orphaned_semaphores() >= 1
        assert not os.path.exists(killed_name) and os.path.exists(live_name)
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()
    sweep_orphaned_semaphores()


def test_scratch_of_dead_drivers_is_swept_a_live_ones_is_kept(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tag = process_tag(child.pid)
    mine = process_tag(os.getpid())
    assert tag_alive(tag) and tag_alive(mine)
    (tmp_path / tag).mkdir()
    (tmp_path / mine).mkdir()
    (tmp_path / tag / "vllm_dist_x").write_text("x")
    pid, _, start = mine.partition("-")
    (tmp_path / f"{pid}-{int(start) + 1}").mkdir()  # this pid, another process: reused pid
    child.kill()
    child.wait()
    removed = {p.name for p in sweep_dead_scratch(tmp_path)}
    assert removed == {tag, f"{pid}-{int(start) + 1}"}
    assert [p.name for p in tmp_path.iterdir()] == [mine]


def test_records_are_cut_back_to_the_checkpoints_step(tmp_path):
    path = tmp_path / "samples.jsonl"
    rows = [{"step": s, "prompt": f"p{s}{i}"} for s in (0, 1, 2, 3, 4) for i in range(2)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + '{"step": 5, "prom')  # killed while writing a line
    truncate_records(path, 2)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == [r for r in rows if r["step"] <= 2]
    truncate_records(tmp_path / "absent.jsonl", 2)  # nothing to cut: no error
