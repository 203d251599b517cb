"""Verification in worker processes, each sample under its own wall-clock timeout.

`VerifierPool.score` hands (completion, reference) pairs to `workers` processes (spawned, so the
trainer's threads and Ray state are not forked), one sample at a time per worker over a pipe,
and returns the results in order. What can go wrong costs the sample it happens in, nothing
more:
- a sample still running `timeout_s` after it started scores 0, reason "timeout"; only its
  worker is killed and replaced, the others go on;
- a worker that dies in a sample (a segfault, a C-level exit, a kill) scores that sample 0,
  reason "worker died", and is replaced;
- an exception, `sys.exit` or `os._exit` in verifier code, or a score that is not a number in
  [0, 1], scores 0 with the reason (rewards/safe.py), in a worker and in serial mode alike.
`BatchStats` counts errors, timeouts and worker deaths, and the failures by reason (the
exception's type), for the trainer's metrics and warnings. Pipes, not queues: there are no named
semaphores to leak when the trainer is killed. `workers=0` scores in this process, serially,
with no timeout (debugging, tests).

Why not multiprocessing.Pool: it cannot say which task a dead worker held (the task is lost and
costs the whole timeout) and cannot kill one hung worker without killing all of them.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from rewards.base import RewardResult
from rewards.registry import get_verifier
from rewards.safe import safe_score

TIMEOUT, WORKER_DIED = "timeout", "worker died"
READY = "ready"  # what a worker sends once its verifier is loaded
STARTUP_S = 120.0  # the most a worker may take to start (spawn, imports) on a loaded machine


@dataclass
class BatchStats:
    """What went wrong in one batch: counts for the metrics, and one example message a reason."""

    errors: int = 0  # verifier errors (exceptions, exits, invalid scores)
    timeouts: int = 0
    worker_deaths: int = 0
    seconds: float = 0.0
    by_reason: Counter = field(default_factory=Counter)  # every failure by its reason
    examples: dict[str, str] = field(default_factory=dict)  # the first message of each reason

    @property
    def failed(self) -> int:
        return self.errors + self.timeouts + self.worker_deaths

    def metrics(self) -> dict[str, float]:
        """The batch's failures: by kind, and by reason under reward/verifier_failures/."""
        metrics = {
            "reward/verifier_errors": float(self.errors),
            "reward/verifier_timeouts": float(self.timeouts),
            "reward/verifier_worker_deaths": float(self.worker_deaths),
            "reward/verifier_failed": float(self.failed),
        }
        for reason, count in self.by_reason.items():
            metrics[f"reward/verifier_failures/{reason.replace(' ', '_')}"] = float(count)
        return metrics

    def count(self, result: RewardResult) -> None:
        reason = failure_reason(result)
        if reason is None:
            return
        if reason == TIMEOUT:
            self.timeouts += 1
        elif reason == WORKER_DIED:
            self.worker_deaths += 1
        else:
            self.errors += 1
        self.by_reason[reason] += 1
        self.examples.setdefault(reason, str(result.info.get("error", reason))[:200])


def failure_reason(result: RewardResult) -> str | None:
    """The reason a sample failed ("timeout", "worker died", an exception's type name, "invalid
    score"), or None when it was scored."""
    if result.info.get("reason") in (TIMEOUT, WORKER_DIED):
        return result.info["reason"]
    error = result.info.get("error")
    if error is None:
        return None
    return str(error).split(":", 1)[0].strip() or "error"


def _worker_main(connection: Connection, name: str, options: dict) -> None:
    """A worker: score each (completion, reference) received until the pipe closes."""
    verifier = get_verifier(name)
    connection.send(READY)  # samples' deadlines start from here, not from the spawn
    while True:
        try:
            completion, reference = connection.recv()
        except (EOFError, OSError):
            return
        result = safe_score(verifier, completion, reference, options)
        try:
            connection.send(result)
        except Exception as error:  # a result that cannot be pickled
            connection.send(RewardResult(0.0, {"error": f"UnsendableResult: {error!r}"}))


class _Worker:
    """One worker process, its end of the pipe, and the sample it is scoring."""

    def __init__(self, name: str, options: dict) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, name, options), daemon=True
        )
        self.process.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0
        self.ready = False

    def assign(self, index: int, item: tuple[str, str]) -> None:
        """Send a sample (after the worker said it is ready: its start-up is not the
        sample's time)."""
        if not self.ready:
            if not self.connection.poll(STARTUP_S):
                raise RuntimeError(f"a verifier worker did not start in {STARTUP_S} s")
            try:
                message = self.connection.recv()
            except (EOFError, OSError) as error:
                self.process.join(timeout=5)
                raise RuntimeError(
                    f"a verifier worker died while starting (exit code {self.process.exitcode})"
                ) from error
            if message != READY:
                raise RuntimeError(f"a verifier worker sent {message!r} before being ready")
            self.ready = True
        self.task, self.started = index, time.monotonic()
        self.connection.send(item)

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


class VerifierPool:
    def __init__(
        self, name: str, options: dict | None = None, workers: int = 2, timeout_s: float = 10.0
    ) -> None:
        verifier = get_verifier(name)  # fail now, in the caller, on an unknown name
        unready = getattr(verifier, "unready", lambda options, timeout_s: None)
        problem = unready(dict(options or {}), timeout_s)
        if problem is not None:  # e.g. a code verifier without its sandbox: before any work
            raise RuntimeError(f"verifier {name!r} cannot run here: {problem}")
        self.name, self.options = name, dict(options or {})
        self.workers, self.timeout_s = workers, timeout_s
        self._workers: list[_Worker] = []

    def score(self, items: list[tuple[str, str]]) -> tuple[list[RewardResult], BatchStats]:
        start = time.perf_counter()
        if self.workers == 0:
            verifier = get_verifier(self.name)
            results = [safe_score(verifier, c, r, self.options) for c, r in items]
        else:
            results = self._score_in_workers(items)
        stats = BatchStats(seconds=time.perf_counter() - start)
        for result in results:
            stats.count(result)
        return results, stats

    def _score_in_workers(self, items: list[tuple[str, str]]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(items)
        waiting = list(range(len(items)))[::-1]  # popped from the end: in order
        while len(self._workers) < self.workers:
            self._workers.append(_Worker(self.name, self.options))
        while waiting or any(w.task is not None for w in self._workers):
            for worker in self._workers:
                if worker.task is None and waiting:
                    index = waiting.pop()
                    worker.assign(index, items[index])
            self._collect(results)
        return results

    def _collect(self, results: list) -> None:
        """Wait for the first result, death or deadline among the busy workers; record it."""
        busy = [w for w in self._workers if w.task is not None]
        deadline = min(w.started for w in busy) + self.timeout_s
        handles = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        ready = set(wait(handles, timeout=max(0.0, deadline - time.monotonic())))
        for worker in busy:
            index = worker.task
            if worker.connection in ready or worker.process.sentinel in ready:
                results[index] = self._receive(worker)
            elif time.monotonic() - worker.started >= self.timeout_s:
                results[index] = RewardResult(0.0, {"reason": TIMEOUT})
                self._replace(worker)

    def _receive(self, worker: _Worker) -> RewardResult:
        """The worker's result; if it died instead, a failure of its sample (and a new one)."""
        try:
            if worker.connection.poll():
                result = worker.connection.recv()
                worker.task = None
                return result
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        self._replace(worker)
        return RewardResult(0.0, {"reason": WORKER_DIED, "error": f"exit code {code}"})

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        self._workers[self._workers.index(worker)] = _Worker(self.name, self.options)

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []


class VerifierFailing(RuntimeError):
    """The verifier failed on every sample of `max_failed_steps` steps in a row."""


class FailureWatch:
    """Watches each step's verifier failures: a warning when more than `warn_share` of the
    samples failed, and `VerifierFailing` once every sample failed in `max_failed_steps` steps
    in a row (a verifier that cannot score anything trains on zeros: stop and say why)."""

    def __init__(self, warn_share: float, max_failed_steps: int) -> None:
        self.warn_share, self.max_failed_steps = warn_share, max_failed_steps
        self.all_failed_streak = 0

    def observe(self, stats: BatchStats, total: int) -> str | None:
        """The warning for this step's batch of `total` samples, or None; raises when due."""
        if total == 0:
            return None
        self.all_failed_streak = self.all_failed_streak + 1 if stats.failed == total else 0
        reasons = ", ".join(
            f"{count} {reason} (e.g. {stats.examples[reason]!r})"
            for reason, count in stats.by_reason.most_common(3)
        )
        if self.all_failed_streak >= self.max_failed_steps:
            raise VerifierFailing(
                f"the verifier failed on every sample of {self.all_failed_streak} steps in a "
                f"row ({reasons}); fix it (python -m rewards scores one answer) or raise "
                "reward.max_failed_steps"
            )
        if stats.failed > self.warn_share * total:
            return f"warning: the verifier failed on {stats.failed} of {total} samples: {reasons}"
        return None


def verifier_pools(reward, parts: dict) -> dict[str, VerifierPool | None]:
    """{part label: the pool of its verifier} for a run's environments (`parts`: {label:
    environment}); `reward.verifier` (a RewardConfig) overrides every part's, parts with one
    verifier share a pool, and a part without one gets None."""
    pools, by_name = {}, {}
    for label, env in parts.items():
        name = reward.verifier or env.verifier
        if name is not None and name not in by_name:
            by_name[name] = VerifierPool(
                name, reward.verifier_options, reward.workers, reward.timeout_s
            )
        pools[label] = by_name.get(name)
    return pools


def score_in_pools(jobs: list[tuple[VerifierPool, str, str]]) -> tuple[list, BatchStats]:
    """Each (pool, completion, reference) scored by its pool, results in order, one batch's
    failure counts over all pools."""
    results: list = [None] * len(jobs)
    for pool in dict.fromkeys(job[0] for job in jobs):
        indices = [k for k, job in enumerate(jobs) if job[0] is pool]
        scored, _ = pool.score([jobs[k][1:] for k in indices])
        for k, result in zip(indices, scored, strict=True):
            results[k] = result
    stats = BatchStats()
    for result in results:
        stats.count(result)
    return results, stats
