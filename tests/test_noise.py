"""The known-noise filters (selfcritic/noise.py) on log records: known noise dropped, everything
else kept; and the loggers and templates they match are the installed vLLM's and Ray's."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from selfcritic import noise

MLA = "model.layers.{}.self_attn.mla_attn.mla_attn.{}"


def _record(logger: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.WARNING, __file__, 1, msg, args, None)


def _not_loaded(names: set[str]) -> logging.LogRecord:
    return _record(
        noise.VLLM_INPLACE, "Following weights were not loaded from checkpoint: %s", names
    )


def test_derived_mla_matrices_not_loaded_are_dropped():
    names = {MLA.format(layer, kind) for layer in range(4) for kind in ("W_UK_T", "W_UV")}
    assert not noise.ReloadNoise().filter(_not_loaded(names))


def test_any_other_weight_not_loaded_is_kept_and_named_alone():
    other = "model.layers.0.self_attn.kv_b_proj.weight"
    record = _not_loaded({MLA.format(0, "W_UV"), other})
    assert noise.ReloadNoise().filter(record)
    assert record.getMessage() == f"Following weights were not loaded from checkpoint: { {other} }"
    lookalike = _not_loaded({"model.layers.0.self_attn.W_UV_proj.weight"})
    assert noise.ReloadNoise().filter(lookalike)


@pytest.mark.parametrize(
    ("layer", "kept"),
    [
        ("RotaryEmbedding", False),
        ("DeepseekScalingRotaryEmbedding", False),
        ("RMSNorm", True),
        ("ColumnParallelLinear", True),
    ],
)
def test_failed_to_load_is_dropped_for_rotary_embeddings_only(layer, kept):
    record = _record(noise.VLLM_LAYERWISE, "%s: Failed to load weights", layer)
    assert noise.ReloadNoise().filter(record) is kept


def test_other_warnings_pass():
    record = _record(noise.VLLM_INPLACE, "Reloading and processing weights took %.2f s", 0.1)
    assert noise.ReloadNoise().filter(record)


def test_the_installed_filter_acts_on_the_named_loggers(caplog):
    noise.silence_reload_noise()
    noise.silence_reload_noise()  # once, however often it is called
    assert logging.getLogger(noise.VLLM_INPLACE).filters.count(noise._RELOAD_NOISE) == 1
    with caplog.at_level(logging.WARNING):
        logging.getLogger(noise.VLLM_LAYERWISE).warning(
            "%s: Failed to load weights", "RotaryEmbedding"
        )
        logging.getLogger(noise.VLLM_LAYERWISE).warning("%s: Failed to load weights", "RMSNorm")
    assert [r.getMessage() for r in caplog.records] == ["RMSNorm: Failed to load weights"]


def test_ray_token_notice_is_dropped_only_inside_the_block(caplog):
    logger = logging.getLogger(noise.RAY_AUTH)
    enabled = "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"
    disabled = "Token authentication is disabled for this Ray cluster. Anyone with network access"
    with caplog.at_level(logging.WARNING):
        with noise.ray_token_notice_silenced():
            logger.warning(enabled)
            logger.warning(disabled)
        logger.warning(enabled)
    assert [r.getMessage() for r in caplog.records] == [disabled, enabled]


def _source(package: str, module: str) -> str:
    spec = importlib.util.find_spec(package)  # the package's location, without importing it
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations))).parent
    return (root / (module.replace(".", "/") + ".py")).read_text()


def test_the_filters_match_the_installed_sources():
    """A vLLM or Ray upgrade that moves or rewords a message fails here, not silently."""
    assert "Following weights were not loaded from checkpoint: %s" in _source(
        "vllm", noise.VLLM_INPLACE
    )
    assert '"%s: Failed to load weights"' in _source("vllm", noise.VLLM_LAYERWISE)
    assert noise._RAY_TOKEN_ENABLED in _source("ray", noise.RAY_AUTH)
    for source in ("vllm", noise.VLLM_INPLACE), ("vllm", noise.VLLM_LAYERWISE):
        assert "logger = init_logger(__name__)" in _source(*source)
    assert "logger = logging.getLogger(__name__)" in _source("ray", noise.RAY_AUTH)
