"""Real vLLM in a Ray actor: logprob parity with the learner, before and after in-place updates."""

from __future__ import annotations

import pytest
import torch

from selfcritic.config import RayConfig, RolloutConfig
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.model.build import load_model
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import serialize, to_checkpoint_names

PROMPTS = [[1, 56, 81, 98, 5, 6, 76, 11, 84, 99, 40, 81, 98], [1, 56, 81, 98, 7, 11, 84]]


@pytest.fixture(scope="module")
def pool(nano_model_path):
    import ray

    from selfcritic.cluster import start_ray
    from selfcritic.rollout.pool import RolloutPool

    start_ray(RayConfig(num_cpus=2))
    pool = RolloutPool(nano_model_path, RolloutConfig())
    yield pool
    pool.shutdown()
    ray.shutdown()


def _max_logprob_error(model, groups, temperature) -> float:
    samples = [sample for group in groups for sample in group]
    ids, attention, mask = pad_batch(
        [s.prompt_ids for s in samples], [s.completion_ids for s in samples], pad_id=0
    )
    with torch.no_grad():
        learner = token_logprobs(model, ids, attention, temperature)
    error = 0.0
    for row, sample in enumerate(samples):
        mine = learner[row][mask[row].bool()]
        error = max(error, float((mine - torch.tensor(sample.logprobs)).abs().max()))
    return error


def _perturb(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # router biases steer expert choice
                buffer.add_(torch.randn(buffer.shape, generator=generator))


def test_engine_logprobs_equal_learner_before_and_after_updates(pool, nano_model_path):
    model = load_model(nano_model_path)
    stale = load_model(nano_model_path)
    for version in range(4):
        for temperature in (0.7, 1.3):
            spec = SamplingSpec(n=3, temperature=temperature, max_tokens=12)
            groups = pool.generate(PROMPTS, spec)
            assert [len(g) for g in groups] == [3, 3]
            assert all(s.weight_version == version for g in groups for s in g)
            assert all(len(s.logprobs) == len(s.completion_ids) > 0 for g in groups for s in g)
            assert _max_logprob_error(model, groups, temperature) < 1e-4
            if version > 0:  # the engine really serves new weights, not the initial ones
                assert _max_logprob_error(stale, groups, temperature) > 1e-2
        _perturb(model, seed=version)
        assert (
            pool.update_weights(serialize(to_checkpoint_names(model.state_dict()))) == version + 1
        )


def test_results_come_back_in_prompt_order(pool):
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=4)
    groups = pool.generate(PROMPTS * 3, spec)
    assert [g[0].prompt_ids for g in groups] == [tuple(p) for p in PROMPTS * 3]
