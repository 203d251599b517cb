"""Verification in parallel worker processes, with a per-sample wall-clock timeout.

`VerifierPool.score` sends (completion, reference) pairs to `workers` processes (spawned, so the
trainer's threads and Ray state are not forked) and waits until a deadline: each sample has
`timeout_s`, and a batch has `timeout_s * ceil(samples / workers)` in all. A sample not done by
then scores 0 with reason "timeout"; the pool is then killed and started afresh so a stuck
verifier cannot hold a worker. A verifier that raises or returns nonsense scores 0
(rewards/safe.py).
`workers=0` scores in this process, serially, with no timeout (debugging, tests).
"""

from __future__ import annotations

import math
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
        pool = self._ensure_pool()
        pending = [pool.apply_async(_score_one, (self.name, self.options, c, r)) for c, r in items]
        rounds = math.ceil(len(items) / self.workers) if items else 0
        deadline = time.monotonic() + self.timeout_s * max(rounds, 1)
        results, stuck = [], False
        for job in pending:
            try:
                results.append(job.get(timeout=max(0.0, deadline - time.monotonic())))
            except multiprocessing.TimeoutError:
                stuck = True
                results.append(RewardResult(0.0, {"reason": "timeout"}))
            except Exception as error:  # e.g. a result that cannot be unpickled
                results.append(RewardResult(0.0, {"error": f"worker failed: {error!r}"}))
        if stuck:
            self.close()  # kill the stuck workers; the next batch gets fresh ones
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
