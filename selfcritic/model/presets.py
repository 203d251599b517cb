"""Model presets: the YAML files of conf/model/, read into the typed ModelConfig."""

from __future__ import annotations

from pathlib import Path

from selfcritic.config import ModelConfig

PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> ModelConfig:
    """conf/model/NAME.yaml checked against the ModelConfig schema."""
    from omegaconf import OmegaConf

    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown model preset {name!r}; available: {preset_names()}")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)
