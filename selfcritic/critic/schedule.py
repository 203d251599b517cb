"""Which pairs of a group the critic compares.

All n(n-1)/2 pairs for small groups; for larger ones a sampled k-regular schedule in which every
response meets exactly k others, so the critic's cost grows as n*k/2 pairs instead of n^2/2.
The k-regular graph is a circulant on a random permutation: response perm[i] meets
perm[i +- 1], ..., perm[i +- k//2], and for odd k also perm[i + n/2] (n must then be even). It is
connected for k >= 2, so Bradley-Terry scores compare every response with every other through
chains of comparisons.
"""

from __future__ import annotations

import itertools
import random

from selfcritic.config import Config
from selfcritic.preflight import Problems, preflight_check


def all_pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def regular_pairs(n: int, k: int, rng: random.Random) -> list[tuple[int, int]]:
    """n*k/2 distinct pairs, each index in exactly k of them."""
    if not 1 <= k < n:
        raise ValueError(f"each of {n} responses can meet 1 to {n - 1} others, not k={k}")
    if (n * k) % 2:
        raise ValueError(f"k={k} comparisons each for n={n} responses: n*k must be even")
    order = list(range(n))
    rng.shuffle(order)
    offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
    pairs = {
        tuple(sorted((order[i], order[(i + offset) % n]))) for i in range(n) for offset in offsets
    }
    return sorted(pairs)


def schedule(n: int, mode: str, k: int, all_pairs_max_n: int, rng: random.Random):
    """The pairs to judge: `mode` all | sampled | auto (all pairs while n <= all_pairs_max_n)."""
    if mode == "all" or (mode == "auto" and n <= all_pairs_max_n) or k >= n - 1:
        return all_pairs(n)
    return regular_pairs(n, k, rng)


@preflight_check
def _sampled_schedule_fits(cfg: Config, problems: Problems) -> None:
    """The sampled schedule meets each response with exactly k others: n*k must be even."""
    critic, n = cfg.critic, cfg.sampling.n
    k = critic.comparisons_per_response
    sampled = critic.schedule == "sampled" or (
        critic.schedule == "auto" and n > critic.all_pairs_max_n
    )
    problems.require(
        not critic.enabled or not sampled or k >= n - 1 or (n * k) % 2 == 0,
        "critic.comparisons_per_response",
        f"with sampling.n={n} responses, n*k must be even for each to meet exactly k={k} others",
    )
