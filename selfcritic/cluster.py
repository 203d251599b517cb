"""Start Ray on this machine or join an existing cluster; check that the actors fit in it; with
GPUs, reserve one placement-group bundle per learner rank (its GPU, and the colocated engines'
share of it)."""

from __future__ import annotations

import contextlib
import math
import os

from selfcritic.config import Config, ConfigError, RayConfig, keyed
from selfcritic.preflight import Problems, preflight_check

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
        from selfcritic.noise import ray_token_notice_silenced

        with ray_token_notice_silenced():  # a cluster of this run only (selfcritic/noise.py)
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


def pin_to_cores(cores: list[int]) -> None:
    """Run this process (and the processes it starts: vLLM's worker) on these cores only;
    none: wherever the OS puts it."""
    if cores:
        os.sched_setaffinity(0, cores)


def overlap_warning(cfg: Config) -> str | None:
    """The run-start warning for `rollout.max_staleness=1` with the engines and the learner not
    pinned to separate cores: the overlapped phases then compete for the same cores (on 2 cores,
    2 threads each, the quick nano run's step took 1.4 x the synchronous one's)."""
    engines, learner = set(cfg.rollout.cpu_cores), set(cfg.learner.cpu_cores)
    if cfg.rollout.max_staleness == 0 or (engines and learner and not engines & learner):
        return None
    return (
        "warning: rollout.max_staleness=1 overlaps sampling and learning, but the engines and "
        "the learner may share cores (rollout.cpu_cores, learner.cpu_cores not disjoint): "
        "both then slow down, and the step can take longer than a synchronous one. Pin them to "
        "separate cores, e.g. rollout.cpu_cores=[0] learner.cpu_cores=[1] (docs/learner.md)"
    )


def actor_cpus(cfg: Config) -> dict[str, float]:
    """Ray CPUs each kind of actor reserves, by the config keys that set them."""
    engines = cfg.rollout.num_engines
    if cfg.critic.enabled and cfg.critic.weights != "current":
        engines += 1  # the lagged or frozen critic's own engine
    return {
        "rollout.cpus_per_engine": engines * cfg.rollout.cpus_per_engine,
        "learner.cpus_per_rank": cfg.learner.world_size * cfg.learner.cpus_per_rank,
    }


_SPELLED = {
    "rollout.cpus_per_engine": "rollout.num_engines x rollout.cpus_per_engine (+1 engine for a "
    "lagged/frozen critic)",
    "learner.cpus_per_rank": "learner.world_size x learner.cpus_per_rank",
}


def cpu_problem(cfg: Config, available: float) -> tuple[str, str] | None:
    """(key, message) when the actors ask Ray for more CPUs than it has (Ray would otherwise wait
    forever for the missing ones), naming the key of the largest request; else None."""
    needs = actor_cpus(cfg)
    if sum(needs.values()) <= available + 1e-9:
        return None
    wanted = "; ".join(f"{_SPELLED[key]} = {value:g}" for key, value in needs.items())
    return max(needs, key=needs.__getitem__), (
        f"the actors need {sum(needs.values()):g} Ray CPUs but Ray has {available:g} "
        f"({wanted}); lower rollout.cpus_per_engine or learner.cpus_per_rank (fractions are "
        "fine: they reserve, the threads settings decide the work), learner.world_size, or "
        "raise ray.num_cpus"
    )


def require_cpus(cfg: Config, available: float) -> None:
    """Raise ConfigError when the actors do not fit in `available` Ray CPUs (a joined
    cluster's size, known once Ray runs)."""
    problem = cpu_problem(cfg, available)
    if problem is not None:
        raise ConfigError(keyed(*problem))


@preflight_check
def _local_cpus(cfg: Config, problems: Problems) -> None:
    """The actors' Ray CPUs fit a local Ray (a joined cluster's once joined), naming the key of
    the largest request."""
    if cfg.ray.address is None:
        problem = cpu_problem(cfg, cfg.ray.num_cpus or os.cpu_count() or 1)
        if problem is not None:
            problems.require(False, *problem)


@preflight_check
def _pinned_cores_exist(cfg: Config, problems: Problems) -> None:
    """Pinned cores are cores this process may run on (on a joined cluster, each node's are
    assumed alike)."""
    usable = sorted(os.sched_getaffinity(0))
    for key, cores in (
        ("rollout.cpu_cores", cfg.rollout.cpu_cores),
        ("learner.cpu_cores", cfg.learner.cpu_cores),
    ):
        unknown = [core for core in cores if core not in usable]
        problems.require(
            not unknown,
            key,
            f"cores {unknown} are not among this machine's usable cores {usable}",
        )


@preflight_check
def _learner_gpus(cfg: Config, problems: Problems) -> None:
    """A rank told to compute on a GPU has one reserved, and a local Ray has the GPUs the ranks
    ask for (each rank its own)."""
    learner = cfg.learner
    problems.require(
        learner.device != "cuda" or learner.gpus_per_rank > 0,
        "learner.device",
        "cuda needs a GPU reserved for each rank: set learner.gpus_per_rank=1",
    )
    if cfg.ray.address is None and learner.gpus_per_rank > 0:
        import torch

        found = torch.cuda.device_count()
        problems.require(
            found >= learner.world_size,
            "learner.gpus_per_rank",
            f"learner.world_size={learner.world_size} ranks need a GPU each, and this machine "
            f"has {found}: set learner.gpus_per_rank=0 (CPU), lower learner.world_size, or join "
            "a cluster with ray.address",
        )


PLACEMENT_TIMEOUT_S = 600


def engines_per_gpu(cfg: Config) -> int:
    """Engines colocated on each learner GPU (0 when the engines have GPUs of their own, or
    none: `rollout.placement`, `rollout.gpus_per_engine`)."""
    rollout = cfg.rollout
    if rollout.placement != "colocate" or rollout.gpus_per_engine == 0:
        return 0
    return math.ceil(rollout.num_engines / cfg.learner.world_size)


def gpu_bundles(cfg: Config) -> list[dict[str, float]] | None:
    """One placement-group bundle per learner rank: a whole GPU, the rank's CPUs and those of
    the engines colocated on that GPU; None for a CPU learner."""
    learner = cfg.learner
    if learner.gpus_per_rank == 0:
        return None
    cpus = learner.cpus_per_rank + engines_per_gpu(cfg) * cfg.rollout.cpus_per_engine
    return [{"CPU": cpus, "GPU": 1.0} for _ in range(learner.world_size)]


def reserve_gpus(bundles: list[dict[str, float]] | None):
    """A Ray placement group of `bundles`, packed on as few nodes as fit, once Ray holds it
    (None for None). Raises naming the keys when the cluster cannot provide it."""
    if bundles is None:
        return None
    import ray
    from ray.util.placement_group import placement_group

    group = placement_group(bundles, strategy="PACK")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as error:
        ray.util.remove_placement_group(group)
        raise ConfigError(
            f"learner.world_size={len(bundles)} ranks with learner.gpus_per_rank > 0 need a GPU "
            f"each and {sum(b['CPU'] for b in bundles):g} CPUs in all, which the Ray cluster did "
            f"not provide in {PLACEMENT_TIMEOUT_S} s: lower learner.world_size, or add GPUs"
        ) from error
    return group


def in_bundle(group, index: int) -> dict:
    """Ray actor options placing an actor in bundle `index` of `group` (none for None)."""
    if group is None:
        return {}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_bundle_index=index % group.bundle_count
        )
    }


@preflight_check
def _colocated_gpus_fit(cfg: Config, problems: Problems) -> None:
    """A learner rank and the engines colocated on its GPU ask for at most the whole GPU."""
    per_gpu = engines_per_gpu(cfg)
    if cfg.learner.gpus_per_rank == 0 or per_gpu == 0:
        return
    asked = cfg.learner.gpus_per_rank + per_gpu * cfg.rollout.gpus_per_engine
    problems.require(
        asked <= 1 + 1e-9,
        "rollout.gpus_per_engine",
        f"colocated on each learner GPU: learner.gpus_per_rank={cfg.learner.gpus_per_rank:g} + "
        f"{per_gpu} engine(s) x rollout.gpus_per_engine={cfg.rollout.gpus_per_engine:g} = "
        f"{asked:g} GPUs: lower them so they sum to at most 1 (e.g. 0.5 and 0.5), or set "
        "rollout.placement=separate",
    )
