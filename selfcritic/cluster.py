"""Start Ray on this machine or join an existing cluster."""

from __future__ import annotations

import contextlib
import os

from selfcritic.config import RayConfig

# Quiet engines and tokenizers in every Ray worker; the driver prints its own progress.
_WORKER_ENV = {
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::UserWarning",
}


def start_ray(cfg: RayConfig) -> bool:
    """Initialise Ray; returns True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": {**_WORKER_ENV, **_passthrough_env()}}
    if cfg.address:
        ray.init(address=cfg.address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, runtime_env=runtime_env)
    return True


def _passthrough_env() -> dict[str, str]:
    """VLLM_* settings of the driver's environment, so users can tune engines from the shell."""
    return {key: value for key, value in os.environ.items() if key.startswith("VLLM_")}


def normal_priority() -> None:
    """Ray starts worker processes at niceness 15; an engine or a learner rank is the step's
    critical path, and at 15 it loses the CPU to Ray's own daemons on a small machine (+30%
    generation time on 2 cores). Back to 0 where allowed (root); elsewhere it stays as Ray set
    it."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)
