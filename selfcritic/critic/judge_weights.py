"""Which weights judge: the policy's own (`current`), those of k updates ago (`lagged`) or the
starting checkpoint's (`frozen`).

`current` judges on the policy's rollout pool itself, as in Kimi K2: no extra engine, no extra
memory. `lagged` and `frozen` start a second pool (one engine) for the critic: `frozen` never
updates it; `lagged` keeps the last k weight states in host memory (k copies of the model, the
price of the setting) and loads the state of k updates ago after each update, so at every step the
critic is exactly k versions behind the policy (or at the start, until k updates have happened).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class JudgeWeights:
    """Holds the engine the critic uses and keeps its weights at the configured lag."""

    def __init__(self, mode: str, lag_steps: int, policy_pool, start_pool: Callable[[], object]):
        """`start_pool()` starts a separate pool on the starting checkpoint (not for current)."""
        self.mode, self.lag_steps = mode, lag_steps
        self.engine = policy_pool if mode == "current" else start_pool()
        self.owns_engine = mode != "current"
        self.pending: deque[list] = deque()

    def after_update(self, bucket_refs: list) -> None:
        """The policy's weights just became those in `bucket_refs` (as synced to its pool)."""
        if self.mode != "lagged":
            return
        self.pending.append(bucket_refs)
        if len(self.pending) > self.lag_steps:
            self.engine.load_buckets(self.pending.popleft())

    @property
    def version(self) -> int:
        """The policy version the critic's weights come from."""
        return self.engine.weight_version

    def shutdown(self) -> None:
        if self.owns_engine:
            self.engine.shutdown()
