"""Verification in parallel worker processes, with a per-sample wall-clock timeout.

`VerifierPool.score` sends (completion, reference) pairs to `workers` processes (spawned, so the
trainer's threads and Ray state are not forked) and collects them in order. A sample is given up
on when the pool has made no progress for `timeout_s` while it was awaited (no sample finished
and none was given up on): it scores 0 with reason "timeout". So one hung sample stalls a batch
by about `timeout_s`, however long the batch (a batch-wide deadline of `timeout_s` x rounds let
one hang in a 128-sample batch stall it for 64 x `timeout_s`). Once as many samples have hung as
there are workers, none is left to run the rest: the pool is killed and a fresh one takes the
samples not yet scored, so they are scored rather than lost; after any hang the pool is replaced
so a stuck verifier cannot keep a worker. A verifier that raises or returns nonsense scores 0
(rewards/safe.py).
`workers=0` scores in this process, serially, with no timeout (debugging, tests).
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field

from rewards.base import RewardResult
from rewards.registry import get_verifier
from rewards.safe import safe_score


def _score_one(name: str, options: dict, completion: str, reference: str) -> RewardResult:
    return safe_score(get_verifier(name), completion, reference, options)


@dataclass
class BatchStats:
    """What went wrong in one batch: counts for the metrics."""

    errors: int = 0
    timeouts: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)


class VerifierPool:
    def __init__(
        self, name: str, options: dict | None = None, workers: int = 2, timeout_s: float = 10.0
    ) -> None:
        get_verifier(name)  # fail now, in the caller, on an unknown name
        self.name, self.options = name, dict(options or {})
        self.workers, self.timeout_s = workers, timeout_s
        self._pool = None

    def _ensure_pool(self):
        if self._pool is None and self.workers > 0:
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self._pool

    def score(self, items: list[tuple[str, str]]) -> tuple[list[RewardResult], BatchStats]:
        start = time.perf_counter()
        if self.workers == 0:
            results = [_score_one(self.name, self.options, c, r) for c, r in items]
        else:
            results = self._score_in_workers(items)
        stats = BatchStats(seconds=time.perf_counter() - start)
        for result in results:
            if result.info.get("reason") == "timeout":
                stats.timeouts += 1
            elif "error" in result.info:
                stats.errors += 1
                stats.reasons.append(str(result.info["error"])[:200])
        return results, stats

    def _score_in_workers(self, items: list[tuple[str, str]]) -> list[RewardResult]:
        results: list[RewardResult | None] = [None] * len(items)
        waiting = list(range(len(items)))
        while waiting:  # each round scores all, or gives up on `workers` hung samples
            waiting = self._score_round(items, waiting, results)
        return results

    def _score_round(self, items, indices: list[int], results: list) -> list[int]:
        """Score `indices` into `results` on the current pool; the indices left unscored when
        every worker is held by a hung sample (a fresh pool takes them)."""
        pool = self._ensure_pool()
        jobs = [
            (i, pool.apply_async(_score_one, (self.name, self.options, *items[i]))) for i in indices
        ]
        hung, progress = 0, time.monotonic()
        for position, (index, job) in enumerate(jobs):
            if hung >= self.workers:  # no worker left: what is not done goes to a fresh pool
                for later, other in jobs[position:]:
                    if other.ready():
                        results[later], _ = self._result(other)
                self.close()
                return [later for later, _ in jobs[position:] if results[later] is None]
            left = progress + self.timeout_s - time.monotonic()
            results[index], timed_out = self._result(job, max(0.0, left))
            hung += timed_out
            progress = time.monotonic()
        if hung:
            self.close()  # kill the stuck workers; the next batch gets fresh ones
        return []

    @staticmethod
    def _result(job, timeout: float = 0.0) -> tuple[RewardResult, bool]:
        """The job's result within `timeout` seconds, and whether it timed out."""
        try:
            return job.get(timeout=timeout), False
        except multiprocessing.TimeoutError:
            return RewardResult(0.0, {"reason": "timeout"}), True
        except Exception as error:  # e.g. a result that cannot be unpickled
            return RewardResult(0.0, {"error": f"worker failed: {error!r}"}), False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
