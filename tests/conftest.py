"""Shared fixtures: a nano model built once per session, wandb off, GPU tests skipped on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("selfcritic-cache")


@pytest.fixture(scope="session")
def nano_model_path(cache_dir) -> Path:
    """The nano preset's checkpoint directory (weights + tokenizer), built locally."""
    from selfcritic.config import ModelConfig
    from selfcritic.model.build import prepare_model

    return prepare_model(ModelConfig(), cache_dir)
