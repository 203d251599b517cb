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
    seed: int | None = None  # per-call seed; None leaves the engine's generator as it is
    ignore_eos: bool = False  # keep generating past end-of-sequence (benchmarks: fixed lengths)


@dataclass(frozen=True)
class Sample:
    """One completion of one prompt."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    text: str
    logprobs: tuple[float, ...]  # of the sampled tokens, under the distribution sampled from
    finish_reason: str  # "stop" (end of sequence or stop string) or "length"
    weight_version: int


class RolloutEngine(Protocol):
    """A text generator whose weights can be replaced in place."""

    def generate(self, prompts: list[list[int]], spec: SamplingSpec) -> list[list[Sample]]:
        """For each prompt (token ids), exactly `spec.n` samples, in prompt order."""
        ...

    def update_weights(self, payload: bytes, version: int) -> None:
        """Load weights (safetensors bytes, checkpoint names) in place; tag later samples."""
        ...

    def shutdown(self) -> None: ...
