"""Find verifiers and rubrics by name.

Verifiers register with `@register_verifier(name)`; a duplicate name is refused so that two
plug-ins never silently shadow each other. Every module in the `rewards` package is imported on
first lookup, so dropping a file in `rewards/` is enough to add one. A verifier living elsewhere
is named by its import path instead, as a Hydra `_target_` would be: "package.module.function"
(or "package.module:function"). Rubrics are the YAML files in `rewards/rubrics/`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

import yaml

from rewards.base import RewardResult, Rubric, RubricAspect
from selfcritic.registry import Registry

Verifier = Callable[..., RewardResult]  # (completion, reference, **options) -> RewardResult
RUBRIC_DIR = Path(__file__).parent / "rubrics"
_VERIFIERS: Registry[Verifier] = Registry("verifier")
register_verifier = _VERIFIERS.register
_NOT_PLUGINS = {"__main__", "base", "registry"}


def discover() -> None:
    """Import every module of the rewards package so their verifiers register."""
    import rewards

    for module in pkgutil.iter_modules(rewards.__path__):
        if module.name not in _NOT_PLUGINS:
            importlib.import_module(f"rewards.{module.name}")


def verifier_names() -> list[str]:
    discover()
    return _VERIFIERS.names()


def get_verifier(name: str) -> Verifier:
    """A registered name, or an import path "module.function" / "module:function"."""
    discover()
    if name in _VERIFIERS or not ("." in name or ":" in name):
        return _VERIFIERS.get(name)
    return _import_target(name)


def _import_target(target: str) -> Verifier:
    module_name, _, attribute = target.replace(":", ".").rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise KeyError(f"verifier target {target!r} cannot be imported: {error}") from error
    if not callable(found):
        raise KeyError(f"verifier target {target!r} is not callable")
    return found


def verifier_exists(name: str) -> bool:
    try:
        get_verifier(name)
    except KeyError:
        return False
    return True


def rubric_names() -> list[str]:
    return sorted(path.stem for path in RUBRIC_DIR.glob("*.yaml"))


def load_rubric(name: str) -> Rubric:
    """Read `rewards/rubrics/NAME.yaml`; a malformed file raises naming the file and field."""
    path = RUBRIC_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown rubric {name!r}; available: {rubric_names()}")
    data = yaml.safe_load(path.read_text())
    try:
        aspects = tuple(RubricAspect(**aspect) for aspect in data["aspects"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: each aspect needs name and description ({error})") from error
    if not aspects:
        raise ValueError(f"{path}: a rubric needs at least one aspect")
    return Rubric(name=data.get("name", name), aspects=aspects)
