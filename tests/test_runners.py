"""The runners in runners/: the Ray job runner against a real Ray head on loopback, and the
scripts that cannot run here (no SLURM) at least parse."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, closing, suppress
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(count: int) -> list[int]:
    """Distinct ports free on loopback now (held open together so that none repeats)."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(closing(socket.socket()))
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


def stop_process_group(pgid: int, grace_s: float = 5.0) -> None:
    """Stop the processes `ray start` left in its own process group (GCS, raylet, dashboard...)
    and only those: `ray stop` would stop every Ray on the machine. Workers have their own
    groups and exit when their raylet does. The dashboard goes on SIGTERM at once; the raylet
    takes about 10 s and the GCS server does not go at all, hence the SIGKILL after a grace."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def start_head(env: dict, log_path: Path) -> tuple[subprocess.Popen, str, str]:
    """`ray start --head` on loopback with free ports and a temp dir of its own, in its own
    session and process group (so that teardown stops this head and nothing else); returns the
    process, the dashboard URL and the temp dir. Output goes to a file: the daemons it starts
    would keep a pipe open after it returns."""
    # a short temp dir: Ray's unix socket paths must stay under about 107 characters
    temp_dir = tempfile.mkdtemp(prefix="scray-", dir="/tmp")
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = free_ports(7)
    command = [
        RAY,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    with log_path.open("w") as log:
        head = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return head, f"http://127.0.0.1:{dashboard}", temp_dir


def stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    if head.poll() is None:
        head.kill()
    stop_process_group(head.pid)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on loopback with its dashboard (the job server) and token authentication with
    a token of its own; yields (dashboard URL, environment for clients)."""
    token_path = tmp_path / "ray_token"
    token_path.write_text(uuid.uuid4().hex)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    # Ray gives a starting node 30 s (fixed) to register with its GCS: on a loaded machine that
    # can pass, so a failed start is tried again, from scratch, twice.
    for attempt in range(3):
        log_path = tmp_path / f"ray_start_{attempt}.log"
        head, address, temp_dir = start_head(env, log_path)
        with suppress(subprocess.TimeoutExpired):
            head.wait(timeout=180)
        if head.returncode == 0:
            break
        stop_head(head, temp_dir)
    else:
        pytest.fail(f"ray start failed 3 times; last:\n{log_path.read_text()[-4000:]}")
    try:
        client_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # the runner finds it
        yield address, client_env
    finally:
        stop_head(head, temp_dir)


def test_ray_runner_submits_nano(ray_head, tmp_path, cache_dir):
    address, env = ray_head
    run_dir = tmp_path / "run"
    job_id = f"selfcritic-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    result = subprocess.run(
        [
            "bash",
            str(REPO / "runners" / "ray_job.sh"),
            "+experiment=nano_quick",
            "trainer.steps=2",
            "tracking.wandb_mode=disabled",
            f"trainer.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}",
        ],
        env={**env, "RAY_ADDRESS": address, "RAY_JOB_ARGS": f"--submission-id {job_id}"},
        cwd=tmp_path,  # the runner finds the repository from its own path
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "step 2/2" in output, output[-6000:]  # the job's output was followed

    # the job server's own record of the job (a subprocess: token authentication is set up per
    # process from the environment)
    query = (
        "import sys; from ray.job_submission import JobSubmissionClient; "
        "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)"
    )
    status = subprocess.run(
        [sys.executable, "-c", query, address, job_id],
        env={**env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.stdout.strip() == "SUCCEEDED", status.stdout + status.stderr[-3000:]

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2]
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()
    print(f"ray job submit to done: {time.monotonic() - started:.0f} s")


def test_ray_runner_needs_an_address(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        ["bash", str(REPO / "runners" / "ray_job.sh"), "+experiment=nano_quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "RAY_ADDRESS" in result.stderr


@pytest.mark.parametrize("script", ["local.sh", "ray_job.sh", "slurm.sbatch"])
def test_runner_scripts_parse(script):
    path = REPO / "runners" / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
