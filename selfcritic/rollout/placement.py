"""Where the engines live beside the learner on GPUs, and what follows from it: whether they
sleep while the learner steps, and how synced weights reach them (`rollout.placement`,
`rollout.sleep_level`, `rollout.weight_sync`; docs/gpus-engines.md).

`sleeps(cfg)` and `weight_sync_backend(cfg)` are pure functions of the rollout settings; the
preflight rules below refuse the combinations that cannot work, naming the keys. Colocated
engines are placed in the learner's GPU bundles (selfcritic/cluster.py). Left out: any
measurement of free GPU memory.
"""

from __future__ import annotations

from selfcritic.config import Config, RolloutConfig
from selfcritic.preflight import Problems, preflight_check

DEVICE_BACKENDS = ("cuda_ipc", "nccl")


def on_gpus(cfg: RolloutConfig) -> bool:
    """Whether the engines run on GPUs (they reserve some)."""
    return cfg.gpus_per_engine > 0


def sleeps(cfg: RolloutConfig) -> bool:
    """Whether the engines are put to sleep while the learner steps."""
    return cfg.placement == "colocate" and cfg.sleep_level > 0


def weight_sync_backend(cfg: RolloutConfig) -> str:
    """`rollout.weight_sync` with `auto` resolved: cuda_ipc for GPU engines colocated with the
    learner, object_store otherwise (CPU engines; separate GPUs unless nccl is chosen)."""
    if cfg.weight_sync != "auto":
        return cfg.weight_sync
    return "cuda_ipc" if on_gpus(cfg) and cfg.placement == "colocate" else "object_store"


@preflight_check
def _sleep_rules(cfg: Config, problems: Problems) -> None:
    """`rollout.sleep_level` > 0 needs `rollout.placement=colocate` (sleeping frees GPUs for the
    learner only when it shares them) and `rollout.max_staleness=0` (at 1 the engines sample
    while the learner steps)."""
    rollout = cfg.rollout
    if rollout.sleep_level == 0:
        return
    problems.require(
        rollout.placement == "colocate",
        "rollout.sleep_level",
        f"engines sleep only to free the GPUs they share with the learner, but "
        f"rollout.placement={rollout.placement}: set rollout.sleep_level=0, or "
        "rollout.placement=colocate",
    )
    problems.require(
        rollout.max_staleness == 0,
        "rollout.sleep_level",
        f"rollout.max_staleness={rollout.max_staleness} samples the next batch while the learner "
        f"steps, so the engines cannot sleep then (rollout.sleep_level={rollout.sleep_level}): "
        "set rollout.sleep_level=0, or rollout.max_staleness=0",
    )


@preflight_check
def _weight_sync_rules(cfg: Config, problems: Problems) -> None:
    """`rollout.weight_sync` cuda_ipc and nccl need GPU engines (`rollout.gpus_per_engine` > 0);
    cuda_ipc needs `rollout.placement=colocate` (an engine opens the learner's device memory);
    nccl needs a learner on GPUs (`learner.gpus_per_rank` > 0: rank 0 sends from its GPU) and
    `rollout.placement=separate` (NCCL refuses two members of one group on one GPU, and a
    colocated engine 0 shares the learner rank 0's)."""
    rollout, backend = cfg.rollout, cfg.rollout.weight_sync
    if backend not in DEVICE_BACKENDS:
        return
    problems.require(
        on_gpus(rollout),
        "rollout.weight_sync",
        f"{backend} moves weights between GPUs, but rollout.gpus_per_engine=0 puts the engines "
        "on CPUs: set rollout.weight_sync=object_store (or auto), or give the engines GPUs",
    )
    problems.require(
        backend != "cuda_ipc" or rollout.placement == "colocate",
        "rollout.weight_sync",
        "cuda_ipc opens the learner's device buffers from the engine, which needs the learner's "
        "GPU visible to it (same node, shared GPUs), but rollout.placement=separate: set "
        "rollout.placement=colocate, or rollout.weight_sync=object_store",
    )
    problems.require(
        backend != "nccl" or cfg.learner.gpus_per_rank > 0,
        "rollout.weight_sync",
        "nccl broadcasts from the learner rank 0's GPU, but learner.gpus_per_rank=0 keeps the "
        "learner on CPUs: give the learner GPUs, or set rollout.weight_sync=object_store",
    )
    problems.require(
        backend != "nccl" or rollout.placement == "separate",
        "rollout.weight_sync",
        "nccl cannot put two members of one group on one GPU, and with rollout.placement="
        "colocate engine 0 shares the learner rank 0's GPU: set rollout.weight_sync=cuda_ipc "
        "(colocated engines), or rollout.placement=separate",
    )
