"""Supervised pairs from an environment's own data: a generic corpus for the warm-start and PTX.

A demonstration is what a good episode writes, turn by turn: for a one-turn task the reference
answer (or a demonstration column), for a tool task the calls and then the final answer.
`demonstration_pairs` turns one into (context ids, target ids) pairs exactly as an episode lays
them out (selfcritic/rollout/episodes.py): the prompt's ids, each model turn's ids ended by the
stop token the engines stop at (a chat template's end of turn, else EOS), each observation as
the encoder renders it; one pair per model turn, its context all that came before it.
`PairsCorpus` holds the pairs and draws them uniformly (warm-start batches of `batch_size`; PTX
batches of any size). Critic verdicts are mixed in around it (selfcritic/envs/verdicts.py,
`env.verdicts`). Left out: weighting pairs by their length.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

from selfcritic.envs.base import Pair


class PairsCorpus:
    """A fixed list of supervised pairs (the `Corpus` protocol of selfcritic/envs/base.py)."""

    token_weights: tuple[tuple[int, float], ...] = ()

    def __init__(
        self,
        make_pairs: Callable[[], Sequence[Pair]],
        recipe: dict,
        sources: tuple[Path, ...],
        batch_size: int,
    ) -> None:
        """`make_pairs` runs at the first draw (a cached warm-start never needs the pairs;
        making them may run tools)."""
        self._make, self._pairs = make_pairs, None
        self.recipe, self.sources, self.batch_size = recipe, sources, batch_size

    @property
    def pairs(self) -> tuple[Pair, ...]:
        if self._pairs is None:
            self._pairs = tuple(self._make())
            if not self._pairs:
                raise ValueError("the environment's data gave no supervised pair")
        return self._pairs

    def warm_start_batch(self, rng: random.Random, step: int, steps: int) -> tuple[Pair, ...]:
        return self.ptx_batch(rng, self.batch_size)

    def ptx_batch(self, rng: random.Random, count: int) -> tuple[Pair, ...]:
        return tuple(rng.choice(self.pairs) for _ in range(count))


def demonstration_pairs(
    prompt_ids: Sequence[int],
    turns: Sequence[str],
    observations: Sequence[str],
    encode,
    max_observation_tokens: int | None = None,
) -> list[Pair]:
    """One (context, target) pair per model turn of a demonstration (`observations[k]` follows
    `turns[k]`; one fewer than the turns); `encode` is the run's PromptEncoder; observations
    are cut to their budget as the episode driver cuts them (`fit_observation`)."""
    from selfcritic.rollout.episodes import fit_observation

    tokenizer = encode.tokenizer
    stop = encode.stop_token_ids()[0]  # the end of turn (chat) or EOS: what ends a sample
    context, pairs = list(prompt_ids), []
    for k, turn in enumerate(turns):
        target = (*tokenizer(turn, add_special_tokens=False).input_ids, stop)
        pairs.append((tuple(context), target))
        context += target
        if k < len(observations):
            ids, _, _ = fit_observation(observations[k], encode.observation, max_observation_tokens)
            context += ids
    return pairs
