"""The data-parallel learner group: FSDP2 ranks in Ray actors against the plain `Learner`.

The reference is always the single-process `Learner` on the whole batch (no sharding, no
process group), so every expected value is computed by a path independent of the one under test.

Tolerance (weights: 2e-5 absolute; grad norm and losses: 1e-5 relative). K ranks sum the same
per-token gradient terms in a different order than one learner (per-rank partial sums, then the
reduce-scatter), so gradients agree to float32 rounding (about 1e-7 relative). Muon's
Newton-Schulz is smooth and keeps that size, but AdamW's first step is lr * g / (|g| + eps), whose
slope at a near-zero gradient element is lr / eps = 2e-3 / 1e-8: a 1e-12 rounding difference
there moves that weight by 2e-6 (measured worst case about 5e-6, on a norm weight). 2e-5 is 1% of
AdamW's largest possible step (lr = 2e-3) and 0.1% of Muon's, while the step moves the weights by
more than 1e-3 (asserted), so a wrong normalisation, a per-shard orthogonalisation or an
unsynchronised clip or bias shows up far above it. Router biases move in steps of exactly u, so
they must match exactly; so must the set of clipped heads.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from dataclasses import replace

import pytest
import torch

from selfcritic.config import LearnerConfig, OptimConfig, RayConfig
from selfcritic.critic.examples import CriticExample
from selfcritic.learner.distributed import BatchTotals, open_store, split_batch
from selfcritic.learner.learner import Learner, PolicyBatch
from selfcritic.learner.sharded import phase_passes
from selfcritic.optim.muon import Muon
from selfcritic.optim.newton_schulz import orthogonalize

WEIGHT_ATOL = 2e-5
METRIC_REL = 1e-5


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from selfcritic.cluster import start_ray

    started = start_ray(RayConfig(num_cpus=2))
    yield
    if started:
        ray.shutdown()


def _batch() -> PolicyBatch:
    """5 policy sequences (3 + 2 per rank), 3 critic examples (2 + 1), 1 PTX sequence (1 + 0).

    Every sequence of a phase has the same total length, so no micro-batch holds padding and the
    router load counts (which include padded positions) are the same however the batch is cut;
    completion lengths differ, so the whole-batch normalisers matter."""
    generator = torch.Generator().manual_seed(0)

    def tokens(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(3, 99, (n,), generator=generator).tolist())

    completion_lengths = [4, 7, 5, 9, 6]
    prompts = [(1, *tokens(13 - n)) for n in completion_lengths]  # 14 tokens per sequence
    completions = [tokens(n) for n in completion_lengths]
    return PolicyBatch(
        prompts=prompts,
        completions=completions,
        old_logprobs=[
            tuple((-4.6 + 0.3 * torch.randn(n, generator=generator)).tolist())
            for n in completion_lengths
        ],
        advantages=[1.2, -0.7, 0.4, -1.5, 0.6],
        temperature=0.9,
        max_new_tokens=10,
        critic_examples=tuple(
            CriticExample((1, *tokens(11)), (24, 25), target, weight)
            for target, weight in (((1.0, 0.0), 1.0), ((0.2, 0.8), 2.0), ((0.0, 1.0), 0.5))
        ),
        ptx_sequences=(((1,), tokens(15)),),
    )


# one sequence per micro-batch: uneven micro-batch counts per rank, so dummy passes run
LEARNER = LearnerConfig(
    loss="grpo",
    kl_beta=0.05,
    tis_cap=2.0,
    ptx_weight=0.5,
    calibration_weight=1.0,
    max_tokens_per_micro_batch=20,
)
OPTIM = OptimConfig(qk_clip_tau=0.12, router_bias_update=1e-3)  # nano heads peak near 0.2


@pytest.fixture(scope="module")
def reference(nano_model_path):
    """The plain learner's step on the whole batch: metrics, checkpoint state, initial state and
    the learner itself (one process, no sharding, no process group)."""
    torch.manual_seed(0)
    learner = Learner(nano_model_path, LEARNER, OPTIM, trust_engine=False)
    initial = {name: tensor.clone() for name, tensor in learner.checkpoint_state().items()}
    metrics = learner.step(_batch())
    return metrics, learner.checkpoint_state(), initial, learner


def _assert_same_step(metrics, state, ref_metrics, ref_state, initial) -> None:
    assert ref_metrics["muonclip/heads_clipped"] > 0  # QK-Clip acted ...
    assert metrics["muonclip/heads_clipped"] == ref_metrics["muonclip/heads_clipped"]
    assert ref_metrics["moe/imbalance_max"] > 1.0  # ... and the router biases moved
    for key in (
        "grad_norm",
        "loss",
        "kl",
        "calibration_loss",
        "ptx_loss",
        "entropy",
        "tis_weight_mean",
        "tis_clipped_fraction",
    ):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=METRIC_REL, abs=1e-7), key
    for key in (
        "muonclip/max_logit",
        "moe/imbalance_max",
        "tokens",
        "logprob_diff_max",
        "logprob_diff_mean",
    ):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=METRIC_REL), key
    assert metrics["tokens_per_second"] > 0
    assert set(state) == set(ref_state)
    moved = max(float((ref_state[n] - initial[n]).abs().max()) for n in ref_state)
    assert moved > 1e-3  # the step is far larger than the tolerance
    biases = [n for n in ref_state if n.endswith("e_score_correction_bias")]
    assert biases and all(not torch.equal(ref_state[n], initial[n]) for n in biases)
    for name, expected in ref_state.items():
        if name in biases:
            assert torch.equal(state[name], expected), name
        else:
            assert torch.allclose(state[name], expected, rtol=0, atol=WEIGHT_ATOL), name


def test_two_fsdp_ranks_step_like_one_learner(ray_cluster, reference, nano_model_path):
    from selfcritic.learner.group import LearnerGroup

    batch = _batch()
    # the split this test relies on: unequal slices and micro-batch counts, a rank with no PTX
    counts = [phase_passes(part, LEARNER) for part in split_batch(batch, 2)]
    assert counts == [
        {"policy": 3, "calibration": 2, "ptx": 1},
        {"policy": 2, "calibration": 1, "ptx": 0},
    ]
    ref_metrics, ref_state, initial, _ = reference
    cfg = LearnerConfig(**{**LEARNER.__dict__, "world_size": 2})
    group = LearnerGroup(nano_model_path, cfg, OPTIM, trust_engine=False)
    try:
        metrics = group.step(batch)
        state = group.checkpoint_state()
    finally:
        group.shutdown()
    _assert_same_step(metrics, state, ref_metrics, ref_state, initial)


def test_one_rank_group_equals_the_plain_learner(ray_cluster, reference, nano_model_path, tmp_path):
    from selfcritic.learner.group import LearnerGroup
    from selfcritic.model.build import load_model

    batch = _batch()
    ref_metrics, ref_state, initial, learner = reference
    group = LearnerGroup(nano_model_path, LEARNER, OPTIM, trust_engine=False)
    try:
        assert group.describe() == learner.optimizer.describe()
        metrics = group.step(batch)
        state = group.checkpoint_state()
        saved = group.save_checkpoint(tmp_path / "checkpoint", nano_model_path)
    finally:
        group.shutdown()
    _assert_same_step(metrics, state, ref_metrics, ref_state, initial)
    assert (saved / "tokenizer.json").exists()
    reloaded = load_model(saved).state_dict()
    for name, tensor in learner.model.state_dict().items():
        assert torch.allclose(reloaded[name], tensor, atol=WEIGHT_ATOL), name


def test_two_ranks_take_ppo_epochs_like_one_learner(ray_cluster, nano_model_path):
    """2 epochs x 2 minibatches over 2 FSDP ranks: the old policy fixed by the ranks on their
    slices, then 4 optimizer steps, each the one the plain learner takes."""
    batch = _batch()
    cfg = LearnerConfig(**{**LEARNER.__dict__, "epochs": 2, "minibatches_per_epoch": 2})
    torch.manual_seed(0)
    learner = Learner(nano_model_path, cfg, OPTIM, trust_engine=False)
    ref_metrics = learner.step(batch)
    ref_state = learner.checkpoint_state()
    from selfcritic.learner.group import LearnerGroup

    group = LearnerGroup(nano_model_path, replace(cfg, world_size=2), OPTIM, trust_engine=False)
    try:
        metrics = group.step(batch)
        state = group.checkpoint_state()
    finally:
        group.shutdown()
    assert metrics["optimizer_steps"] == ref_metrics["optimizer_steps"] == 4
    for key in ("loss", "learner/ratio_mean_epoch_2", "learner/clip_fraction_epoch_2"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-4, abs=1e-6), key
    assert abs(ref_metrics["learner/ratio_mean_epoch_2"] - 1.0) > 1e-3
    for name, expected in ref_state.items():
        assert torch.allclose(state[name], expected, rtol=0, atol=4 * WEIGHT_ATOL), name


def test_batch_split_and_totals():
    batch = _batch()
    parts = split_batch(batch, 2)
    assert [len(p.prompts) for p in parts] == [3, 2]
    assert sum((p.completions for p in parts), []) == batch.completions
    assert sum((p.critic_examples for p in parts), ()) == batch.critic_examples
    assert [len(p.ptx_sequences) for p in parts] == [1, 0]
    totals = BatchTotals.of(batch)
    assert totals == BatchTotals(
        sequences=5, tokens=31, calibration_weight=3.5, ptx_tokens=15, reported_tokens=31
    )
    (_, target), *_ = batch.ptx_sequences  # token weights add emphasis, not tokens
    assert BatchTotals.of(replace(batch, ptx_token_weights=((target[0], 4.0),))) == totals


def test_rendezvous_store_owns_its_port_from_the_start():
    """Rank 0's store binds a port the OS picks (no free-then-bind window); a second store
    opened at once gets another port, and a client reaches the first one's data."""
    import datetime

    import torch.distributed as dist

    first, second = open_store("127.0.0.1", 2), open_store("127.0.0.1", 2)
    assert first.port > 0 and second.port > 0 and first.port != second.port
    first.set("rank0", "ready")
    timeout = datetime.timedelta(seconds=30)
    client = dist.TCPStore("127.0.0.1", first.port, 2, is_master=False, timeout=timeout)
    assert client.get("rank0") == b"ready"


# --- Muon on 2-rank sharded DTensors, in two spawned processes --------------------------------

SHAPES = {"wide": ((7, 12), 1), "tall": ((13, 6), 1), "experts": ((3, 10, 5), 2)}


def _tensors(seed: int):
    generator = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(shape, generator=generator) for k, (shape, _) in SHAPES.items()}
    grads = [
        {k: torch.randn(shape, generator=generator) for k, (shape, _) in SHAPES.items()}
        for _ in range(2)
    ]
    return params, grads


def _muon(params: dict) -> Muon:
    groups = [{"params": [params[k]], "splits": SHAPES[k][1]} for k in SHAPES]
    return Muon(groups, lr=0.05, weight_decay=0.1)


def _sharded_muon_worker(rank: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    full_params, grads = _tensors(0)
    params = {
        k: torch.nn.Parameter(distribute_tensor(v, mesh, [Shard(0)]))
        for k, v in full_params.items()
    }
    assert params["tall"].to_local().shape[0] == (7 if rank == 0 else 6)  # uneven rows
    assert params["experts"].to_local().shape[0] == (2 if rank == 0 else 1)  # whole experts
    optimizer = _muon(params)
    for step_grads in grads:  # two steps: momentum and Nesterov take part
        for k, param in params.items():
            param.grad = distribute_tensor(step_grads[k], mesh, [Shard(0)])
        optimizer.step()
    result = {k: p.full_tensor() for k, p in params.items()}
    if rank == 0:
        torch.save(result, out)
    dist.barrier()
    dist.destroy_process_group()


def test_muon_orthogonalises_whole_matrices_under_sharding(tmp_path):
    full_params, grads = _tensors(0)
    params = {k: torch.nn.Parameter(v.clone()) for k, v in full_params.items()}
    optimizer = _muon(params)
    for step_grads in grads:
        for k, param in params.items():
            param.grad = step_grads[k].clone()
        optimizer.step()

    out = str(tmp_path / "sharded.pt")
    rendezvous = tempfile.mktemp(dir=tmp_path)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_sharded_muon_worker, args=(rank, rendezvous, out))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    sharded = torch.load(out)
    for k, param in params.items():
        assert torch.allclose(sharded[k], param.detach(), atol=1e-6), k
        assert not torch.allclose(sharded[k], full_params[k], atol=1e-2), k  # it did move

    # the test can tell: orthogonalising each rank's rows alone gives another matrix
    grad = grads[0]["tall"]
    per_shard = torch.cat(
        [orthogonalize(grad[:7], dtype=torch.float32), orthogonalize(grad[7:], dtype=torch.float32)]
    )
    assert not torch.allclose(per_shard, orthogonalize(grad, dtype=torch.float32), atol=1e-2)


def test_world_size_is_validated():
    from selfcritic.config import Config, ConfigError
    from selfcritic.preflight import validate

    for field, value in (("world_size", 0), ("threads_per_rank", 0), ("cpus_per_rank", 0.0)):
        cfg = Config()
        setattr(cfg.learner, field, value)
        with pytest.raises(ConfigError, match=f"learner.{field}"):
            validate(cfg)


def test_state_saved_by_two_ranks_resumes_on_one(ray_cluster, nano_model_path, tmp_path):
    """Sharded state (DCP) written by 2 ranks, read back by 1 rank: its next step is the one the
    2 ranks take from that state (model and both optimizers' state resharded on load)."""
    from selfcritic.learner.group import LearnerGroup

    first, second = _batch(), replace(_batch(), advantages=[-a for a in _batch().advantages])
    two = LearnerGroup(nano_model_path, replace(LEARNER, world_size=2), OPTIM, trust_engine=False)
    try:
        two.step(first)  # momentum and AdamW moments now hold something to restore
        two.save_state(tmp_path / "state")
        expected = two.step(second)
        expected_state = two.checkpoint_state()
    finally:
        two.shutdown()
    one = LearnerGroup(nano_model_path, LEARNER, OPTIM, trust_engine=False)
    try:
        one.load_state(tmp_path / "state")
        metrics = one.step(second)
        state = one.checkpoint_state()
    finally:
        one.shutdown()
    assert metrics["grad_norm"] == pytest.approx(expected["grad_norm"], rel=METRIC_REL)
    for name, tensor in expected_state.items():
        assert torch.allclose(state[name], tensor, rtol=0, atol=WEIGHT_ATOL), name
