"""The training loop: the order of calls between components, and nothing else.

The task is the environment (`env`, selfcritic/envs/): its prompts, verifier, rubric, and where
it has them its held-out evaluation, corpus and critic probes. Before the loop: the cached
warm-start stage on its corpus (`warmstart.enabled`, selfcritic/warmstart.py) and, with
`eval.every`, the held-out evaluation of the starting weights (step 0).
One step: the environment's prompts -> its episodes through the rollout pool (n each:
selfcritic/rollout/episodes.py) -> verifier scores (with dynamic sampling,
verifiable groups without score variance are replaced by new prompts' groups) -> self-critic
(rubric scores, calibration examples against the verifier, RL-form verdict groups; judged by the
weights `critic.weights` selects) -> rewards (`reward.combine`) -> group-relative advantages ->
learner step (policy + calibration + PTX) -> weight sync into the engines -> held-out evaluation
every `eval.every` steps -> metrics. Training checkpoints every `trainer.checkpoint_every` steps
(exact resume); at the end a Hugging Face checkpoint in `<output_dir>/checkpoint` and, with
evaluations, the report (selfcritic/eval/report.py). In a mixture of environments (`env=mix`)
every step metric is also reported per part, under `env/<label>/`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import math
import pickle
import random
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from rewards.base import Rubric
from rewards.format import apply_budget
from rewards.pool import FailureWatch, score_in_pools, verifier_pools
from rewards.registry import load_rubric
from selfcritic.checkpoint import (
    check_resumable,
    newest_checkpoint,
    publish_model,
    training_settings,
    write_checkpoint,
)
from selfcritic.config import Config, ConfigError, keyed
from selfcritic.critic.gate import load_probes, unchecked_warning
from selfcritic.critic.judge import make_prompter, prompt_encoder, verdict_token_ids
from selfcritic.critic.judge_weights import JudgeWeights
from selfcritic.critic.prompts import CHAT_TEMPLATE
from selfcritic.critic.self_critic import CritiqueResult, SelfCritic
from selfcritic.envs.base import OBSERVATION_LABEL, Prompt, Trajectory
from selfcritic.envs.reasoning import answer_of, final_answer
from selfcritic.envs.registry import build_environment, label_prompts, parts
from selfcritic.learner.advantages import ADVANTAGE_ESTIMATORS, informative_groups
from selfcritic.learner.learner import PolicyBatch, trust_engine_logprobs
from selfcritic.preflight import context_problems
from selfcritic.progress import StepConsole
from selfcritic.rollout.broadcast import WeightBroadcast
from selfcritic.rollout.episodes import observing_for, run_episodes
from selfcritic.rollout.partial import (
    PausedGroup,
    check_single_turn,
    continue_paused,
    split_finished,
)
from selfcritic.rollout.placement import sleeps, weight_sync_backend
from selfcritic.rollout.types import Sample, SamplingSpec
from selfcritic.schedule import annealed, lr_scale_at
from selfcritic.tracking import Tracker
from selfcritic.warmstart import warm_start


def engine_logprobs_due(step: int, every: int, trusted: bool) -> bool:
    """Whether this step's samples carry the engine's logprobs: always when they are not
    trusted (the TIS correction needs them); trusted, only as the parity check of the first step
    and every `every`-th (`learner.logprob_check_every`)."""
    return not trusted or step == 1 or step % every == 0


@contextmanager
def timed(metrics: dict[str, float], key: str):
    start = time.perf_counter()
    yield
    metrics[key] = time.perf_counter() - start


class Trainer:
    """Builds the components from a validated Config and runs the loop."""

    def __init__(self, cfg: Config, output_dir: Path) -> None:
        self.cfg, self.output_dir = cfg, output_dir
        self.owns_ray = False
        self.pool = None
        self.judge_weights: JudgeWeights | None = None
        self.rubrics: dict[str, Rubric] = {}
        # rollout.max_staleness=1: the thread that samples the next batch, and that batch
        # (step, (prompts, groups, verifier scores, penalties), its metrics) once sampled
        self.sampler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sample-ahead")
        self.ahead: tuple[int, tuple, dict] | None = None
        self.paused: list[PausedGroup] = []  # rollout.partial_tokens: groups still running

    def run(self) -> dict[str, float]:
        """Run every step (from the one after the resumed checkpoint's); returns the last
        step's metrics."""
        try:
            self._setup()
            first = self._resume() + 1
            metrics: dict[str, float] = {}
            steps, every = self.cfg.trainer.steps, self.cfg.trainer.checkpoint_every
            if first == 1 and self.evaluation_due(0):
                self.tracker.log(0, self.evaluate(0))
            console = StepConsole(
                self.cfg.tracking.console, steps, first, self.cfg.trainer.log_every
            )
            with console:
                for step in range(first, steps + 1):
                    metrics = self.step(step)
                    console.step_done(step, metrics)
                    if every and step % every == 0 and step < steps:
                        self._save(step)
            if first <= steps:
                final = self._save(steps)
                publish_model(final / "model", self.output_dir / "checkpoint")
                print(f"checkpoint: {self.output_dir / 'checkpoint'}")
            self._report()
            return metrics
        finally:
            self._teardown()

    def _save(self, step: int) -> Path:
        """A full training checkpoint of `step` (see selfcritic/checkpoint.py); its path."""

        def write_parts(directory: Path) -> None:
            self.learner.save_checkpoint(directory / "model", self.model_path)
            self.learner.save_state(directory / "learner")
            state = {
                "step": step,
                "weight_version": self.pool.weight_version,
                "wandb_run_id": self.tracker.run_id,
                "settings": training_settings(self.cfg),
                "python_random": repr(random.getstate()),
            }
            (directory / "trainer.json").write_text(json.dumps(state, indent=1, default=str))
            torch.save(torch.get_rng_state(), directory / "torch_rng.pt")
            if self.critic is not None:
                (directory / "critic.pkl").write_bytes(pickle.dumps(self.critic.state()))
            if self.ahead is not None:  # sampled with weights this checkpoint no longer holds
                (directory / AHEAD_FILE).write_bytes(pickle.dumps(self.ahead))
            if self.paused:  # partial rollouts: their tokens so far, and their versions
                (directory / PAUSED_FILE).write_bytes(pickle.dumps(self.paused))

        start = time.perf_counter()
        path = write_checkpoint(
            self.output_dir, step, write_parts, self.cfg.trainer.keep_checkpoints
        )
        print(f"saved {path} ({time.perf_counter() - start:.1f} s)", flush=True)
        return path

    def _resume(self) -> int:
        """Restore the newest complete checkpoint, if resuming; returns its step (0: none)."""
        if self.resume_from is None:
            return 0
        path, state = self.resume_from, self.resumed_state
        self.learner.load_state(path / "learner")
        buckets = self.learner.weight_buckets(self.cfg.rollout.sync_bucket_mb)
        self.pool.load_buckets(buckets, version=state["weight_version"])
        if self.judge_weights is not None and self.judge_weights.mode == "lagged":
            self.judge_weights.engine.load_buckets(buckets)  # the lag restarts from here
        if self.critic is not None and (path / "critic.pkl").exists():
            self.critic.load_state(pickle.loads((path / "critic.pkl").read_bytes()))
        if (path / AHEAD_FILE).exists():
            self.ahead = pickle.loads((path / AHEAD_FILE).read_bytes())
        if (path / PAUSED_FILE).exists():
            self.paused = pickle.loads((path / PAUSED_FILE).read_bytes())
        torch.set_rng_state(torch.load(path / "torch_rng.pt"))
        random.setstate(ast.literal_eval(state["python_random"]))
        self.tracker.truncate_after(state["step"])
        print(f"resumed from {path} (step {state['step']})", flush=True)
        return state["step"]

    def _setup(self) -> None:
        import ray

        from selfcritic.cluster import (
            engines_per_gpu,
            gpu_bundles,
            overlap_warning,
            require_cpus,
            reserve_gpus,
            start_ray,
        )
        from selfcritic.learner.group import LearnerGroup
        from selfcritic.rollout.pool import RolloutPool

        cfg = self.cfg
        self.env = build_environment(cfg.env, cfg)
        self.parts = parts(self.env)  # {label: environment}: the mixture's parts, or the one
        check_single_turn(self.env, cfg.rollout.partial_tokens)
        probes = []
        if cfg.critic.enabled:
            probes = load_probes(cfg.critic.gate, first_part_with(self.parts, "probes"))
            drawn = self.prompts(1, 0, cfg.data.prompts_per_step)  # the rubrics in use
            specs = {p.rubric or self.default_rubric(p.env) for p in drawn}
            aspects = [a.name for spec in sorted(specs) for a in self.rubric(spec).aspects]
            if warning := unchecked_warning(aspects, probes, cfg.critic):
                print(warning, flush=True)
        if warning := overlap_warning(cfg):
            print(warning, flush=True)
        cache = Path(cfg.trainer.cache_dir).expanduser()
        # the tokenizer the warm-start keeps: the lengths are checked before any long work
        self.model_path, self.tokenizer, self.encode = prepared_model(cfg, self.parts, cache)
        trust = cfg.model.trust_remote_code
        self.encode_observation = self.encode.observation  # a turn of its own (chat.py)
        self._check_with_tokenizer()
        self.observing = observing_for(self.env, self.encode)
        # the environment's supervised pairs, made once for the warm-start and RL's PTX
        corpus_of = first_part_with(self.parts, "corpus")
        uses_ptx = cfg.learner.ptx_weight > 0 and cfg.warmstart.ptx_per_step > 0
        corpus = corpus_of(self.tokenizer) if cfg.warmstart.enabled or uses_ptx else None
        if cfg.warmstart.enabled:
            self.model_path = warm_start(cfg, corpus, self.model_path, cache)
        self.resume_from = newest_checkpoint(self.output_dir) if cfg.trainer.resume else None
        self.resumed_state: dict = {}
        if self.resume_from is not None:
            self.resumed_state = json.loads((self.resume_from / "trainer.json").read_text())
            check_resumable(self.resumed_state["settings"], cfg)
        self._save_config()
        self.tracker = Tracker(
            cfg.tracking,
            self.output_dir,
            dataclasses.asdict(cfg),
            run_id=self.resumed_state.get("wandb_run_id"),
        )
        self.owns_ray = start_ray(cfg.ray)
        require_cpus(cfg, ray.cluster_resources().get("CPU", 0.0))  # a joined cluster's size
        # with GPUs, a bundle per learner rank, shared with the engines colocated on its GPU
        self.gpus = reserve_gpus(gpu_bundles(cfg))
        colocated = self.gpus if engines_per_gpu(cfg) else None
        self.pool = RolloutPool(self.model_path, cfg.rollout, trust, colocated)
        on_gpu = torch.cuda.is_available() or cfg.learner.gpus_per_rank > 0
        # a restarted engine's weights when none are kept in the object store (a device sync)
        self.pool.refill = lambda: self.learner.weight_buckets(cfg.rollout.sync_bucket_mb)
        self.trust_engine = trust_engine_logprobs(
            cfg.learner.old_logprobs, cfg.rollout.dtype, on_gpu, cfg.learner.compute_dtype
        )
        self.learner = LearnerGroup(
            self.model_path, cfg.learner, cfg.optim, self.trust_engine, trust, self.gpus
        )
        print(f"model: {self.model_path}\noptimizer groups:\n{self.learner.describe()}")
        self.broadcast = None  # rollout.weight_sync=nccl: the group, formed once here
        if weight_sync_backend(cfg.rollout) == "nccl":
            self.broadcast = WeightBroadcast(self.learner, self.pool, cfg.rollout)
        self.verifiers = verifier_pools(cfg.reward, self.parts)  # {label: pool or None}
        rewards = cfg.reward
        self.verifier_watch = FailureWatch(rewards.warn_failed_share, rewards.max_failed_steps)
        self.critic = None
        if cfg.critic.enabled:
            self.critic = SelfCritic(
                cfg.critic,
                self.rubric(self.default_rubric(next(iter(self.parts)))),
                self.encode,
                verdict_token_ids(self.tokenizer, cfg.critic.verdict_letters),
                probes,
                context_len=cfg.rollout.max_model_len,
            )
            self.judge_weights = JudgeWeights(
                cfg.critic.weights,
                cfg.critic.lag_steps,
                self.pool,
                lambda: RolloutPool(
                    self.model_path, dataclasses.replace(cfg.rollout, num_engines=1), trust
                ),
            )
        self.ptx_data = corpus if uses_ptx else None

    def default_rubric(self, label: str) -> str:
        """The rubric of part `label`'s prompts that name none: `critic.rubric`, else the
        environment's."""
        return self.cfg.critic.rubric or self.parts[label].rubric

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        """The environment's prompts, each labelled with its part."""
        return label_prompts(self.env, self.env.prompts(step, draw, count))

    def _check_prompt_lengths(self) -> None:
        """Every prompt of a finite environment (`all_prompts`) fits the context with
        `sampling.max_tokens`; those that do not are refused, or dropped (`data.long_prompts`)."""
        room = self.cfg.rollout.max_model_len - self.cfg.sampling.max_tokens
        for label, env in self.parts.items():
            if not hasattr(env, "all_prompts"):
                continue
            lengths = {p: len(self.encode(p.text, p.system, p.tools)) for p in env.all_prompts()}
            long = [p for p, length in lengths.items() if length > room]
            if not long:
                continue
            longest = max(long, key=lengths.get)
            if self.cfg.data.long_prompts == "drop":
                env.keep_prompts(lambda p, long=frozenset(long): p not in long)
                print(f"{label}: dropped {len(long)} prompts longer than {room} tokens")
                continue
            raise ConfigError(
                keyed(
                    "data.long_prompts",
                    f"{len(long)} prompts of {label!r} leave no room for sampling.max_tokens="
                    f"{self.cfg.sampling.max_tokens} in rollout.max_model_len="
                    f"{self.cfg.rollout.max_model_len}; the longest ({lengths[longest]} "
                    f"tokens) begins {longest.text[:60]!r}: set data.long_prompts=drop to "
                    "leave them out, or raise rollout.max_model_len",
                )
            )

    def _check_with_tokenizer(self) -> None:
        """What needs the tokenizer, before any long work: every prompt's length where the
        environment has a finite set, the lengths rule (preflight.context_problems) on the
        first step's prompts, one token per verdict letter."""
        self._check_prompt_lengths()
        prompts = self.prompts(1, 0, self.cfg.data.prompts_per_step)
        specs = {p.rubric or self.default_rubric(p.env) for p in prompts}
        aspects = []
        if self.cfg.critic.enabled:
            aspects = [(a.name, a.description) for s in specs for a in self.rubric(s).aspects]
        prompter = make_prompter(self.cfg.critic, self.encode)
        whole = {p.text: (p.system, p.tools) for p in prompts}  # a prompt's system and tools

        def encode(text: str) -> list[int]:  # a policy prompt whole, a critic prompt as text
            return self.encode(text, *whole.get(text, (None, None)))

        problems = context_problems(
            self.cfg,
            encode,
            [p.text for p in prompts],
            aspects,
            lambda question, aspect, description: prompter.prompt(
                question, "", "", aspect, description
            ),
        )
        if self.cfg.critic.enabled:
            try:
                verdict_token_ids(self.tokenizer, self.cfg.critic.verdict_letters)
            except ValueError as error:
                problems.append(keyed("critic.verdict_letters", str(error)))
        problems += self._observation_problems()
        if problems:
            raise ConfigError("\n".join(problems))

    def _observation_problems(self) -> list[str]:
        """A multi-turn environment needs a chat template that can append a turn as ids (the
        stock Qwen3 template renders its last assistant turn differently: refused here, not at
        the first observation)."""
        if not self.encode.chat or getattr(self.env, "max_turns", 1) <= 1:
            return []
        try:
            self.encode.observation("x")
        except ValueError as error:
            return [keyed("data.chat_template", str(error))]
        return []

    def _save_config(self) -> None:
        """The run's settings as `config.yaml` (what `python -m selfcritic.eval` reads back)."""
        from omegaconf import OmegaConf

        self.output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.structured(self.cfg), self.output_dir / "config.yaml")

    def rubric(self, spec: str) -> Rubric:
        """A rubric by name, path or import path, loaded once."""
        if spec not in self.rubrics:
            self.rubrics[spec] = load_rubric(spec)
        return self.rubrics[spec]

    def step(self, step: int) -> dict[str, float]:
        cfg, metrics = self.cfg, {}
        spec = self._rollout_spec(step)
        temperature = spec.temperature
        metrics["rollout/temperature"] = temperature
        with timed(metrics, "time/step"):
            prompts, groups, verifiable, penalties = self._sampled(step, spec, metrics)
            with timed(metrics, "time/critic"):
                critique = self._critique(prompts, groups, verifiable, step, spec, metrics)
            critic_scores = (  # [groups, n], also when no group is left (0 rows)
                torch.tensor(critique.scores).reshape(verifiable.shape)
                if critique
                else torch.zeros_like(verifiable)
            )
            rewards = self._combine(verifiable, penalties, critic_scores, metrics)
            batch = self._policy_batch(groups, rewards, critique, temperature, step, metrics)
            # rollout.max_staleness=1: batch step+1 sampled meanwhile; rollout.sleep_level: the
            # engines asleep meanwhile (never both: the preflight refuses it)
            with self._sampling_ahead(step, metrics), self._engines_asleep(batch, metrics):
                learner_metrics = {} if batch is None else self._learn(batch, metrics)
            if batch is not None:
                self._sync(metrics)
            metrics["weight_version"] = self.pool.weight_version
            if self.evaluation_due(step):
                with timed(metrics, "time/eval"):
                    metrics.update(self.evaluate(step))
        metrics.update({_learner_key(k): v for k, v in learner_metrics.items()})
        metrics.update(_rollout_metrics(groups, metrics["time/rollout"]))
        if len(self.parts) > 1 and groups:
            metrics.update(part_metrics(prompts, groups, verifiable, critic_scores, rewards))
        self.tracker.log(step, metrics)
        every = cfg.tracking.samples_every
        if every and step % every == 0:
            rows = self._sample_rows(prompts, groups, verifiable, rewards, critique)
            self.tracker.log_samples(step, rows)
        return metrics

    def _rollout_spec(self, step: int) -> SamplingSpec:
        """How batch `step` is sampled: the annealed temperature, the step's seed, and the
        engine's logprobs where due (every step when the batch is sampled a step ahead: they are
        its behaviour policy's)."""
        cfg, sampling = self.cfg, self.cfg.sampling
        lagged = cfg.rollout.max_staleness > 0
        return SamplingSpec(
            n=sampling.n,
            temperature=annealed(
                step,
                cfg.trainer.steps,
                sampling.temperature,
                sampling.temperature_final,
                sampling.temperature_schedule,
            ),
            max_tokens=sampling.max_tokens,
            top_p=sampling.top_p,
            stop=tuple(sampling.stop),
            stop_token_ids=self.encode.turn_stop_ids(),
            seed=step_seed(cfg.trainer.seed, step, ROLLOUT_SEED),
            logprobs=lagged
            or engine_logprobs_due(step, cfg.learner.logprob_check_every, self.trust_engine),
        )

    def _sampled(self, step: int, spec: SamplingSpec, metrics: dict):
        """Batch `step`: the one sampled ahead during the previous step (with its metrics), or
        sampled now; its staleness (weight versions behind the pool's) checked against
        `rollout.max_staleness` and logged."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            sampled = self._sample_groups(step, spec, metrics)
        else:
            ahead_step, sampled, ahead_metrics = ahead
            assert ahead_step == step, (ahead_step, step)
            metrics.update(ahead_metrics)
        now = self.pool.weight_version
        # a partial rollout's earlier segments are older by design: its last one is bounded
        last = [t.pieces[-1][2] for group in sampled[1] for t in group if t.pieces]
        staleness = now - min(last, default=now)
        if staleness > self.cfg.rollout.max_staleness:
            raise RuntimeError(
                f"batch {step} was sampled {staleness} weight versions ago, more than "
                f"rollout.max_staleness={self.cfg.rollout.max_staleness}"
            )
        metrics["rollout/staleness"] = float(staleness)
        if self.cfg.rollout.partial_tokens is not None:
            oldest = [p[2] for group in sampled[1] for t in group for p in t.pieces]
            metrics["rollout/oldest_segment_lag"] = float(now - min(oldest, default=now))
        return sampled

    @contextmanager
    def _sampling_ahead(self, step: int, metrics: dict):
        """With `rollout.max_staleness` = 1, batch step+1 is sampled (and verified) in a thread
        while the body runs (the learner's step); it waits for it after, the wait logged as
        time/rollout_wait. Synchronous (0), or at the last step, the body runs alone."""
        if self.cfg.rollout.max_staleness == 0 or step >= self.cfg.trainer.steps:
            yield
            return
        ahead_metrics: dict[str, float] = {}
        spec = self._rollout_spec(step + 1)
        future = self.sampler.submit(self._sample_groups, step + 1, spec, ahead_metrics)
        try:
            yield
        finally:
            with timed(metrics, "time/rollout_wait"):
                sampled = future.result()  # its error, if any, is raised here
        self.ahead = (step + 1, sampled, ahead_metrics | {"rollout/temperature": spec.temperature})

    def _rollout(self, step: int, draw: int, count: int, spec: SamplingSpec, metrics: dict):
        """`count` groups of new prompts of draw `draw`, sampled to their end; with partial
        rollouts (`rollout.partial_tokens`), the paused groups continued first in as many of the
        slots, every response given at most that many tokens, and only the groups that have
        ended returned (the others stay paused)."""
        budget = self.cfg.rollout.partial_tokens
        context = self.cfg.rollout.max_model_len
        resumed: list[PausedGroup] = []
        if budget is not None:
            resumed, self.paused = self.paused, []
            continue_paused(self.pool, resumed, spec, budget, context)
            count = max(count - len(resumed), 0)
        prompts = self.prompts(step, draw, count)
        ids = [self.encode(p.text, p.system, p.tools) for p in prompts]
        first = (
            spec
            if budget is None
            else dataclasses.replace(spec, max_tokens=min(budget, spec.max_tokens))
        )
        groups = run_episodes(
            self.pool, self.env, prompts, ids, first, self.encode_observation, context,
            getattr(self.env, "max_turns", 1), self.observing,
        ) if prompts else []  # fmt: skip
        if budget is None:
            return prompts, groups
        prompts, groups, self.paused = split_finished(
            [g.prompt for g in resumed] + prompts,
            [g.trajectories for g in resumed] + groups,
            spec.max_tokens,
            context,
        )
        metrics["rollout/paused_groups"] = float(len(self.paused))
        metrics["rollout/resumed_groups"] = float(len(resumed))
        return prompts, groups

    def _sample_groups(self, step: int, spec: SamplingSpec, metrics: dict):
        """This step's prompts, their groups, verifier scores and budget penalties. With
        `data.dynamic_sampling`, a verifiable group whose verifier scores are all equal carries
        no signal and is replaced by a group of a new prompt (draws 1, 2, ... of the source, up
        to `data.max_draws` in all) before the critic spends anything on it. The accuracy
        metrics come from the first draw only, so they stay unbiased estimates."""
        data = self.cfg.data
        draws = data.max_draws if data.dynamic_sampling else 1
        kept: list[tuple] = []  # (prompt, group, scores row, penalties row)
        rollout_s = verify_s = 0.0
        discarded = 0
        for draw in range(draws):
            start = time.perf_counter()
            # distinct per-request seeds for every draw (request_seed of first_index + i)
            draw_spec = dataclasses.replace(spec, first_index=draw * DRAW_SEED_STRIDE)
            # only as many refills as groups are missing
            prompts, groups = self._rollout(
                step, draw, data.prompts_per_step - len(kept), draw_spec, metrics
            )
            if not groups:  # partial rollouts: every group still running
                break
            no_final = self._set_answers(groups)
            if draw == 0:
                metrics["reward/no_final_answer"] = no_final
            middle = time.perf_counter()
            scores, penalties = self._verify(prompts, groups, metrics, first_draw=draw == 0)
            rollout_s, verify_s = (
                rollout_s + middle - start,
                verify_s + time.perf_counter() - middle,
            )
            for g, prompt in enumerate(prompts):
                flat = prompt.reference is not None and bool((scores[g] == scores[g, 0]).all())
                if flat and data.dynamic_sampling:
                    discarded += 1
                else:
                    kept.append((prompt, groups[g], scores[g], penalties[g]))
            if not data.dynamic_sampling or len(kept) >= data.prompts_per_step:
                break
        metrics.update(
            {
                "time/rollout": rollout_s,
                "time/verify": verify_s,
                "rollout/draws": float(draw + 1),
                "rollout/discarded_groups": float(discarded),
                "rollout/kept_groups": float(len(kept)),
            }
        )
        if not kept:  # every group was flat: train on none, but keep the step's records
            return (
                [],
                [],
                torch.zeros((0, self.cfg.sampling.n)),
                torch.zeros((0, self.cfg.sampling.n)),
            )
        return (
            [k[0] for k in kept],
            [k[1] for k in kept],
            torch.stack([k[2] for k in kept]),
            torch.stack([k[3] for k in kept]),
        )

    def evaluation_due(self, step: int) -> bool:
        """Evaluate before the first step, every `eval.every` steps and after the last."""
        every = self.cfg.eval.every
        if not every:
            return False
        return step == 0 or step % every == 0 or step == self.cfg.trainer.steps

    def evaluate(self, step: int) -> dict[str, float]:
        """The environment's held-out evaluation on the weights the rollout pool serves now."""
        from selfcritic.eval.held_out import evaluate_environment, headline

        start = time.perf_counter()
        metrics = evaluate_environment(
            self.parts,
            self.pool,
            self.tokenizer,
            self.cfg,
            self.verifiers,
            seed=step_seed(self.cfg.trainer.seed, step, EVAL_SEED),
            final=step in (0, self.cfg.trainer.steps),  # where a suite measures more
        )
        if self.cfg.tracking.console != "quiet":
            shown = " ".join(f"{k[5:]}={metrics[k]:.3f}" for k in headline(self.parts, metrics))
            print(f"eval step {step}: {shown} ({time.perf_counter() - start:.1f} s)", flush=True)
        return metrics

    def _report(self) -> None:
        """The end-of-run report (runs with evaluations only): table, files, and the figure to
        wandb; its rows are the environment's `report_metrics` where it has them."""
        from selfcritic.eval.report import write_report

        env = self.env if len(self.parts) == 1 else None
        rows, curves = getattr(env, "report_metrics", None), getattr(env, "report_curves", ())
        written = write_report(self.output_dir, rows, curves)
        if written is None:
            return
        text, figure = written
        print(f"report ({self.output_dir / 'report.md'}):\n{text}", flush=True)
        self.tracker.log_report(text, figure)

    def _sample_rows(self, prompts, groups, verifiable, rewards, critique) -> list[dict]:
        """The first `tracking.samples_groups` groups as table rows, with the critic's outcomes
        for each response ("aspect vs #j: outcome", both orders averaged)."""
        outcomes: dict[tuple[int, int], list[str]] = {}
        for item in critique.judged if critique else []:
            g, i, j = item.job.key
            outcomes.setdefault((g, i), []).append(f"{item.job.aspect} vs #{j}: {item.outcome:.2f}")
            outcomes.setdefault((g, j), []).append(
                f"{item.job.aspect} vs #{i}: {1 - item.outcome:.2f}"
            )
        rows = []
        for g, (prompt, group) in enumerate(zip(prompts, groups, strict=True)):
            if g >= self.cfg.tracking.samples_groups:
                break
            for i, sample in enumerate(group):
                rows.append(
                    {
                        "group": g,
                        "prompt": prompt.text,
                        "response": episode_text(sample),
                        "verifier_score": None
                        if math.isnan(float(verifiable[g, i]))
                        else float(verifiable[g, i]),
                        "critic_score": critique.scores[g][i] if critique else 0.0,
                        "reward": float(rewards[g, i]),
                        "critic_outcomes": "; ".join(outcomes.get((g, i), [])),
                    }
                )
        return rows

    def _learn(self, batch: PolicyBatch, metrics: dict) -> dict[str, float]:
        with timed(metrics, "time/learn"):
            return self.learner.step(batch)

    @contextmanager
    def _engines_asleep(self, batch, metrics: dict):
        """With `rollout.placement=colocate` and `rollout.sleep_level` > 0, the engines sleep
        while the body (the learner's step) has the GPUs, and their weights wake after it, for
        the sync (which wakes the rest); otherwise the body runs alone."""
        if batch is None or not sleeps(self.cfg.rollout):
            yield
            return
        with timed(metrics, "time/engine_sleep"):
            self.pool.sleep(self.cfg.rollout.sleep_level)
        try:
            yield
        finally:
            with timed(metrics, "time/engine_wake"):
                self.pool.wake_up(("weights",))

    def _sync(self, metrics: dict) -> None:
        """The learner's weights to the engines (and the judge's, where it lags), by
        `rollout.weight_sync`: CUDA IPC handles to rank 0's device buffers, an NCCL broadcast
        from rank 0, or the object store; then sleeping engines get their KV cache back (after
        the weights, vLLM's order)."""
        rollout = self.cfg.rollout
        with timed(metrics, "time/sync"):
            buckets = None
            if weight_sync_backend(rollout) == "cuda_ipc":
                self.learner.device_weight_sync(
                    rollout.sync_bucket_mb, rollout.dtype, self.pool.load_handles
                )
            elif weight_sync_backend(rollout) == "nccl":
                self.broadcast.sync()
            else:
                buckets = self.learner.weight_buckets(rollout.sync_bucket_mb)
                self.pool.load_buckets(buckets)
            if self.judge_weights is not None and self.judge_weights.mode == "lagged":
                buckets = buckets or self.learner.weight_buckets(rollout.sync_bucket_mb)
                self.judge_weights.after_update(buckets)
        if sleeps(rollout):
            self.pool.wake_up()

    def _answer_of(self, prompt: Prompt, text: str) -> str:
        """What the verifier and critic see of `text`: its final part where the prompt's
        environment strips a reasoning block ("" where there is none)."""
        return final_answer(text, getattr(self.parts[prompt.env], "reasoning_tags", None)) or ""

    def _set_answers(self, groups: list[list[Trajectory]]) -> float:
        """Set each trajectory's `answer` (reasoning.answer_of) where its environment asks for
        one: the last turn alone and/or the final part after a reasoning block; the share of
        responses with no final part."""
        missing = total = 0
        for group in groups:
            for trajectory in group:
                env = self.parts[trajectory.prompt.env]
                total += 1
                if getattr(env, "reasoning_tags", None) or getattr(env, "answer_is_last_turn", 0):
                    answer = answer_of(env, trajectory)
                    trajectory.answer = "" if answer is None else answer
                    missing += answer is None
        return missing / max(total, 1)

    def _verify(
        self, prompts: list[Prompt], groups, metrics: dict, first_draw: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Verifier scores [G, n] (NaN where a prompt has no reference) and budget penalties.
        The first draw's batch gives the step's metrics (unbiased: no refills) and is watched
        for failures (a warning, or a stop when the verifier fails on everything)."""
        scores = torch.full((len(groups), self.cfg.sampling.n), float("nan"))
        penalties = torch.zeros_like(scores)
        jobs, where = [], []
        for g, (prompt, group) in enumerate(zip(prompts, groups, strict=True)):
            budget = prompt.token_budget or self.cfg.reward.token_budget
            pool = self.verifiers[prompt.env]
            for i, episode in enumerate(group):
                ids, penalties[g, i] = apply_budget(
                    list(episode.completion_ids),
                    episode.engine_finish == "stop",
                    budget,
                    self.cfg.reward.budget_penalty,
                )
                if prompt.reference is not None and pool is not None:
                    text = (  # a tool episode's final answer, whatever its observations cost
                        episode.answer_text
                        if len(ids) == len(episode.completion_ids) or len(episode.turns) > 1
                        else self._answer_of(
                            prompt, self.tokenizer.decode(ids, skip_special_tokens=True)
                        )
                    )
                    jobs.append((pool, text, prompt.reference))
                    where.append((g, i))
        results, stats = score_in_pools(jobs)
        for (g, i), result in zip(where, results, strict=True):
            scores[g, i] = result.score
        if not first_draw:
            return scores, penalties
        checked = scores[~scores.isnan()]
        metrics.update(
            {
                "reward/verifiable_mean": float(checked.mean())
                if checked.numel()
                else float("nan"),
                "reward/over_budget_rate": float((penalties > 0).float().mean()),
                **stats.metrics(),
            }
        )
        warning = self.verifier_watch.observe(stats, len(jobs))
        if warning:
            print(warning, flush=True)
        return scores, penalties

    def _critique(
        self, prompts: list[Prompt], groups, verifiable, step: int, spec: SamplingSpec, metrics
    ) -> CritiqueResult | None:
        """The critic's judgement of the step (None when the critic is off); its RL-form
        verdicts are sampled at the policy's temperature, with logprobs when the policy's are."""
        if self.critic is None:
            return None
        verified = [[None if math.isnan(v) else v for v in row] for row in verifiable.tolist()]
        result = self.critic.score(
            [p.text for p in prompts],
            groups,
            self.judge_weights.engine,
            seed=step_seed(self.cfg.trainer.seed, step, CRITIC_SEED),
            verified=verified,
            rubrics=[self.rubric(p.rubric or self.default_rubric(p.env)) for p in prompts],
            step=step,
            rl_temperature=spec.temperature,
            rl_engine=self.pool,
            rl_logprobs=spec.logprobs,
        )
        metrics.update(result.metrics())
        for warning in result.warnings:  # the anchor set's robustness alarm
            print(f"step {step}: {warning}", flush=True)
        metrics["critic/weight_lag"] = float(self.pool.weight_version - self.judge_weights.version)
        return result

    def _combine(self, verifiable, penalties, critic, metrics) -> torch.Tensor:
        """One reward per sample (reward.combine): the verifier's where it applies and the
        critic's elsewhere, or a weighted mix of both; budget penalties subtracted."""
        weights = self.cfg.reward
        checked = ~verifiable.isnan()
        verifier_part = weights.verifiable_weight * verifiable.nan_to_num(0.0)
        critic_part = weights.critic_weight * critic
        if weights.combine == "verifier_first":
            rewards = torch.where(checked, verifier_part, critic_part)
        else:
            rewards = verifier_part + critic_part
        rewards = rewards - penalties
        metrics["reward/mean"] = float(rewards.mean())
        metrics["reward/critic_abs_mean"] = float(critic.abs().mean())
        metrics["reward/critic_only_share"] = float((~checked).float().mean())
        return rewards

    def _policy_batch(
        self,
        groups: list[list[Sample]],
        rewards: torch.Tensor,
        critique: CritiqueResult | None,
        temperature: float,
        step: int,
        metrics: dict,
    ) -> PolicyBatch | None:
        """Advantages per sample (groups without reward variance dropped when configured), plus
        the critic's RL-form verdict groups and its calibration examples."""
        trajectories, advantages = self._advantaged(groups, rewards, metrics, "learner")
        samples = [_as_sequence(t) for t in trajectories]
        examples = tuple(critique.examples) if critique else ()
        if critique and critique.rl_groups:
            verdict_rewards = torch.tensor([r for _, r in critique.rl_groups])
            more, more_advantages = self._advantaged(
                [g for g, _ in critique.rl_groups], verdict_rewards, metrics, "critic/rl"
            )
            samples += [_as_sequence(s) for s in more]
            advantages = advantages + more_advantages
        ptx, ptx_weights = (), ()
        if self.ptx_data is not None:  # warm-start critic verdicts keep the judging skill
            rng = random.Random(f"ptx:{self.cfg.trainer.seed}:{step}")
            ptx = self.ptx_data.ptx_batch(rng, self.cfg.warmstart.ptx_per_step)
            ptx_weights = self.ptx_data.token_weights
        if not samples and not examples and not ptx:
            return None
        masks = tuple(s.loss_mask for s in samples)
        return PolicyBatch(
            prompts=[s.prompt_ids for s in samples],
            completions=[s.completion_ids for s in samples],
            old_logprobs=[s.logprobs for s in samples],
            advantages=advantages,
            # only where an environment wrote tokens into a completion (multi-turn)
            loss_masks=masks if any(0 in mask for mask in masks) else (),
            temperature=temperature,
            max_new_tokens=self.cfg.sampling.max_tokens,
            critic_examples=examples,
            ptx_sequences=ptx,
            ptx_token_weights=ptx_weights,
            lr_scale=lr_scale_at(
                step,
                self.cfg.trainer.steps,
                self.cfg.trainer.lr_schedule,
                self.cfg.trainer.lr_warmup_steps,
                self.cfg.trainer.lr_final_fraction,
            ),
        )

    def _advantaged(self, groups, rewards: torch.Tensor, metrics: dict, panel: str):
        """The samples of informative groups and their advantages."""
        keep = (
            informative_groups(rewards)
            if self.cfg.learner.filter_zero_variance
            else torch.ones(len(groups), dtype=torch.bool)
        )
        metrics[f"{panel}/informative_groups"] = float(keep.float().mean())
        if not keep.any():
            return [], []
        advantages = ADVANTAGE_ESTIMATORS.get(self.cfg.learner.advantage)(rewards[keep])
        samples = [s for group, k in zip(groups, keep.tolist(), strict=True) if k for s in group]
        return samples, advantages.flatten().tolist()

    def _teardown(self) -> None:
        import ray

        self.sampler.shutdown(wait=False, cancel_futures=True)
        if self.judge_weights is not None:
            self.judge_weights.shutdown()
        if getattr(self, "learner", None) is not None:
            self.learner.shutdown()
        if self.pool is not None:
            self.pool.shutdown()
        for pool in set(getattr(self, "verifiers", {}).values()) - {None}:
            pool.close()
        for env in getattr(self, "parts", {}).values():
            if hasattr(env, "close"):  # an environment's own processes (tool servers)
                env.close()
        if getattr(self, "tracker", None) is not None:
            self.tracker.finish()
        if getattr(self, "gpus", None) is not None:
            ray.util.remove_placement_group(self.gpus)
        if self.owns_ray:
            ray.shutdown()


ROLLOUT_SEED, CRITIC_SEED, EVAL_SEED = 0, 1, 2
AHEAD_FILE = "ahead.pkl"  # in a checkpoint: the batch sampled ahead (rollout.max_staleness=1)
PAUSED_FILE = "paused.pkl"  # in a checkpoint: the paused groups (rollout.partial_tokens)
DRAW_SEED_STRIDE = 1_000_000  # request indices of dynamic sampling's draw k start at k * this


def first_part_with(environments: dict, capability: str):
    """The environment's `capability` (corpus, probes), the first part's that has it in a
    mixture (the preflight made sure one has it where a setting needs it), or None."""
    found = (getattr(env, capability) for env in environments.values() if hasattr(env, capability))
    return next(found, None)


def tokenizer_texts(cfg: Config, environments: dict) -> list[str]:
    """What a `model.tokenizer=bpe` tokenizer is trained on: every part's training texts and
    the critic's prompt template (so its fixed lines are a few tokens each)."""
    with_texts = [env for env in environments.values() if hasattr(env, "texts")]
    if not with_texts:
        raise ConfigError(
            keyed(
                "model.tokenizer",
                f"bpe trains on the environment's texts, and {cfg.env.name!r} gives "
                "none (a dataset environment does): use model.tokenizer=char",
            )
        )
    texts = [text for env in with_texts for text in env.texts()]
    return [cfg.critic.template or CHAT_TEMPLATE, *texts]


def prepared_model(cfg: Config, environments: dict, cache: Path):
    """(the base model's directory, its tokenizer, the run's PromptEncoder): the model built or
    loaded (a `bpe` tokenizer trained on the environments' texts), prompts encoded through the
    chat template (data.chat_template, else BOS and the text), and every environment that
    follows the template (e.g. a tool format) told of the encoder."""
    from selfcritic.model.build import load_tokenizer, prepare_model

    texts = functools.partial(tokenizer_texts, cfg, environments)  # called for `bpe` only
    model_path = prepare_model(cfg.model, cache, texts)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    encode = prompt_encoder(tokenizer, cfg.data.chat_template)
    for env in environments.values():
        if hasattr(env, "use_encoder"):
            env.use_encoder(encode)
    return model_path, tokenizer, encode


def step_seed(run_seed: int, step: int, purpose: int) -> int:
    """The seed of one purpose's engine calls at `step`: with `request_seed` per prompt, every
    sampled token is a function of (run seed, step, prompt index, sample index), so a resumed
    run samples what the uninterrupted run would have."""
    return (run_seed * 1_000_003 + step) * 4 + purpose


def _learner_key(name: str) -> str:
    """Learner metrics go under learner/, unless they already name their panel (muonclip/...)."""
    return name if "/" in name else f"learner/{name}"


def _rollout_metrics(groups: list[list[Trajectory]], seconds: float) -> dict[str, float]:
    episodes = [t for group in groups for t in group]
    if not episodes:
        return {}
    tokens = sum(len(t.completion_ids) for t in episodes)
    digest = hashlib.sha256(repr([tuple(t.completion_ids) for t in episodes]).encode()).digest()
    length, truncated = _lengths(episodes)
    return {
        # a fingerprint of every sampled token: equal digests, equal samples (resume checks)
        "rollout/digest": float(int.from_bytes(digest[:4], "big")),
        "rollout/response_length": length,
        "rollout/truncated_rate": truncated,
        "rollout/tokens_per_second": tokens / max(seconds, 1e-9),
        "rollout/turns": sum(len(t.turns) for t in episodes) / len(episodes),
        "rollout/observation_cuts": float(sum(t.observation_cuts for t in episodes)),
    } | episode_counts(episodes)


def episode_counts(episodes: list[Trajectory]) -> dict[str, float]:
    """The environments' per-episode counts (numeric `info` values, e.g. a tool episode's
    `tool_calls` and `tool_errors/<reason>`), summed over the step's episodes as `episode/...`."""
    totals: dict[str, float] = {}
    for trajectory in episodes:
        for key, value in trajectory.info.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[f"episode/{key}"] = totals.get(f"episode/{key}", 0.0) + value
    return totals


def episode_text(trajectory: Trajectory) -> str:
    """A whole episode for the sample table: each model turn, then the environment's answer
    to it as `[observation: ...]`; one turn is just its text."""
    parts = [trajectory.texts[0] if trajectory.texts else ""]
    for turn, observation in zip(trajectory.texts[1:], trajectory.observations, strict=False):
        parts += [f"\n[{OBSERVATION_LABEL}: {observation}]\n", turn]
    return "".join(parts)


def _lengths(episodes: list[Trajectory]) -> tuple[float, float]:
    """Mean completion tokens of `episodes`, and the share the engine cut at its budget."""
    tokens = sum(len(t.completion_ids) for t in episodes)
    truncated = sum(t.engine_finish == "length" for t in episodes)
    return tokens / len(episodes), truncated / len(episodes)


@dataclasses.dataclass(frozen=True)
class _Sequence:
    """One sequence for the learner: an episode's, or a critic verdict's (mask all ones)."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    loss_mask: tuple[int, ...]


def _as_sequence(item: Trajectory | Sample) -> _Sequence:
    if isinstance(item, Sample):
        ones = (1,) * len(item.completion_ids)
        return _Sequence(item.prompt_ids, item.completion_ids, item.logprobs, ones)
    prompt = tuple(item.ids[: item.prompt_length])
    return _Sequence(
        prompt, tuple(item.completion_ids), item.completion_logprobs, tuple(item.completion_mask)
    )


def part_metrics(
    prompts: list[Prompt],
    groups,
    verifiable: torch.Tensor,
    critic: torch.Tensor,
    rewards: torch.Tensor,
) -> dict[str, float]:
    """A mixture's step per part (`env/<label>/...`): groups, reward, verifier and critic
    means, response length and truncation."""
    metrics = {}
    for label in dict.fromkeys(p.env for p in prompts):
        rows = [g for g, p in enumerate(prompts) if p.env == label]
        checked = verifiable[rows][~verifiable[rows].isnan()]
        length, truncated = _lengths([t for g in rows for t in groups[g]])
        metrics |= {
            f"env/{label}/groups": float(len(rows)),
            f"env/{label}/reward_mean": float(rewards[rows].mean()),
            f"env/{label}/verifiable_mean": float(checked.mean()) if checked.numel() else math.nan,
            f"env/{label}/critic_abs_mean": float(critic[rows].abs().mean()),
            f"env/{label}/response_length": length,
            f"env/{label}/truncated_rate": truncated,
        }
    return metrics
