"""Real vLLM engines in Ray actors: logprob parity with the learner before and after in-place
updates, two engines, an engine killed with SIGKILL, retries, order, clean shutdown."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from selfcritic.config import RayConfig, RolloutConfig
from selfcritic.learner.logprobs import pad_batch, token_logprobs
from selfcritic.model.build import load_model
from selfcritic.rollout.pool import RolloutError
from selfcritic.rollout.types import SamplingSpec
from selfcritic.rollout.weights import to_checkpoint_names

PROMPTS = [[1, 56, 81, 98, 5, 6, 76, 11, 84, 99, 40, 81, 98], [1, 56, 81, 98, 7, 11, 84]]


@pytest.fixture(scope="module")
def pool(nano_model_path):
    import ray

    from selfcritic.cluster import start_ray
    from selfcritic.rollout.pool import RolloutPool

    shm_before = set(os.listdir("/dev/shm"))
    start_ray(RayConfig(num_cpus=2))
    # small buckets, so that a sync really travels as several objects
    pool = RolloutPool(nano_model_path, RolloutConfig(num_engines=2, sync_bucket_mb=4))
    yield pool
    pool.shutdown()
    ray.shutdown()
    leftovers = set(os.listdir("/dev/shm")) - shm_before
    assert not leftovers, f"files left in /dev/shm: {sorted(leftovers)}"


def max_logprob_error(model, groups, temperature) -> float:
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


def perturb(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
        if seed == 1:  # one of the updates moves the router biases, which steer expert choice
            for name, buffer in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    buffer.add_(torch.randn(buffer.shape, generator=generator))


def test_both_engines_match_the_learner_before_and_after_updates(pool, nano_model_path):
    model, stale = load_model(nano_model_path), load_model(nano_model_path)
    prompts = PROMPTS * 2  # two shards: both engines serve every call
    for version in range(4):
        assert pool.engine_versions() == [version, version]
        for temperature in (0.7, 1.3):
            spec = SamplingSpec(n=3, temperature=temperature, max_tokens=12)
            groups = pool.generate(prompts, spec)
            assert [len(g) for g in groups] == [3] * 4
            assert all(s.weight_version == version for g in groups for s in g)
            assert all(len(s.logprobs) == len(s.completion_ids) > 0 for g in groups for s in g)
            for shard in (groups[:2], groups[2:]):  # engine 0's, then engine 1's
                assert max_logprob_error(model, shard, temperature) < 1e-4
                if version > 0:  # the engine serves the new weights, not the initial ones
                    assert max_logprob_error(stale, shard, temperature) > 1e-2
        perturb(model, seed=version)
        assert pool.update_weights(to_checkpoint_names(model.state_dict())) == version + 1
    pytest.shared_model = model  # the killed-engine test goes on from these weights


def test_killed_engine_returns_at_the_current_version(pool):
    model = pytest.shared_model
    victim = pool.engine_pids()[1]
    os.kill(victim, signal.SIGKILL)
    groups = pool.generate(PROMPTS * 2, SamplingSpec(n=2, temperature=0.7, max_tokens=10))
    assert pool.restarts == 1 and pool.engine_pids()[1] != victim
    assert pool.engine_versions() == [pool.weight_version] * 2
    assert all(s.weight_version == pool.weight_version for g in groups for s in g)
    assert max_logprob_error(model, groups[2:], 0.7) < 1e-4  # the restarted engine's shard


def test_results_come_back_in_order_with_uneven_prompts(pool):
    prompts = [[1] + [5 + i % 7] * (i + 1) for i in range(7)]  # 7 prompts, lengths 2..8
    groups = pool.generate(prompts, SamplingSpec(n=2, temperature=1.0, max_tokens=4))
    assert [g[0].prompt_ids for g in groups] == [tuple(p) for p in prompts]
    assert all(len(g) == 2 for g in groups)


def test_failing_generation_is_retried_then_reported(pool):
    too_long = [[1] + [5] * 400]  # longer than max_model_len=256: the engine refuses it twice
    with pytest.raises(RolloutError, match="failed to generate twice"):
        pool.generate(too_long, SamplingSpec(n=1, temperature=1.0, max_tokens=4))
    assert pool.generate(PROMPTS, SamplingSpec(n=1, temperature=1.0, max_tokens=2))  # still fine


def test_stop_strings_end_samples(pool):
    groups = pool.generate(
        PROMPTS, SamplingSpec(n=4, temperature=1.3, max_tokens=30, stop=("e", "a", "o"))
    )
    for sample in (s for g in groups for s in g):
        assert not any(letter in sample.text for letter in "eao")


def test_probability_verdicts_equal_the_learners(pool, nano_model_path):
    """The critic's probability mode reads exactly the verdict distribution the learner's
    calibration loss trains: softmax over the X and Y logits after the critic prompt."""
    from transformers import AutoTokenizer

    from selfcritic.config import CriticConfig
    from selfcritic.critic.judge import Judge, PairJob
    from selfcritic.trainer import verdict_token_ids

    model = pytest.shared_model  # the weights the pool serves now
    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    verdicts = verdict_token_ids(tokenizer, ("X", "Y"))
    judge = Judge(
        CriticConfig(verdict_mode="probability"),
        lambda text: [1, *tokenizer(text, add_special_tokens=False).input_ids],
        verdicts,
    )
    jobs = [
        PairJob(0, "Q: 3+4=", " 7", " 8", "correct"),
        PairJob(1, "Q: 1+1=", " 5", " 2", "no_praise"),
    ]
    prompts = [judge.encode(judge.prompt_text(job, swapped=False)) for job in jobs]
    answers = pool.generate(prompts, judge.spec())
    for prompt, answer in zip(prompts, answers, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1, list(verdicts)]
        expected = float(torch.softmax(logits, -1)[0])
        assert judge.read(answer[0]) == pytest.approx(expected, abs=1e-4)
