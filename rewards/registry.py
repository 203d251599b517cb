"""Find verifiers and rubrics by name.

Verifiers register with `@register_verifier(name)`; a duplicate name is refused so that two
plug-ins never silently shadow each other. Every module in the `rewards` package is imported on
first lookup, so dropping a file in `rewards/` is enough to add one. A verifier living elsewhere
is named by its import path instead, as a Hydra `_target_` would be: "package.module.function"
(or "package.module:function"). Rubrics are YAML files (by name in `rewards/rubrics/`, or by
path) or Python objects named by import path ("package.module:object").
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from pathlib import Path

import yaml

from rewards.base import RewardResult, Rubric, RubricAspect
from selfcritic.config import Config
from selfcritic.preflight import Problems, preflight_check
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


def load_rubric(spec: str) -> Rubric:
    """A rubric from a name in `rewards/rubrics/`, a path to a YAML file, or an import path
    "package.module:object" naming a `Rubric` or a function returning one. A bad file or target
    raises naming it and the field."""
    path = Path(spec).expanduser()
    if spec.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise KeyError(f"rubric file {spec!r} does not exist")
        return rubric_from_yaml(path)
    if ":" in spec:
        return _import_rubric(spec)
    named = RUBRIC_DIR / f"{spec}.yaml"
    if not named.is_file():
        raise KeyError(
            f"unknown rubric {spec!r}; available: {rubric_names()}, "
            "or give a .yaml path or a 'package.module:object' import path"
        )
    return rubric_from_yaml(named)


def rubric_from_yaml(path: Path) -> Rubric:
    data = yaml.safe_load(path.read_text()) or {}
    try:
        aspects = tuple(RubricAspect(**aspect) for aspect in data["aspects"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: each aspect needs name and description ({error})") from error
    return checked_rubric(Rubric(name=data.get("name", path.stem), aspects=aspects), str(path))


def _import_rubric(target: str) -> Rubric:
    module_name, _, attribute = target.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise KeyError(f"rubric target {target!r} cannot be imported: {error}") from error
    rubric = found() if callable(found) and not isinstance(found, Rubric) else found
    if not isinstance(rubric, Rubric):
        raise ValueError(f"rubric target {target!r} gave {type(rubric).__name__}, not a Rubric")
    return checked_rubric(rubric, target)


def checked_rubric(rubric: Rubric, where: str) -> Rubric:
    """Refuse empty rubrics, duplicate aspect names and weights that are not positive."""
    names = [aspect.name for aspect in rubric.aspects]
    if not names:
        raise ValueError(f"{where}: a rubric needs at least one aspect")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: aspect names must be unique, got {names}")
    for aspect in rubric.aspects:
        weight = aspect.weight
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if not (number and math.isfinite(weight) and weight > 0):
            raise ValueError(
                f"{where}: aspect {aspect.name!r} needs a finite number > 0 as its weight, "
                f"got {weight!r}"
            )
    return rubric


def load_problem(load: Callable[[str], object], spec: str) -> str | None:
    """What loading a plug-in raises, on one line (any error: a missing name, a module that
    fails at import, a syntax error, a bad field), or None."""
    try:
        load(spec)
    except BaseException as error:  # a plug-in's import may even call sys.exit
        if isinstance(error, KeyboardInterrupt):
            raise
        text = str(error).strip().splitlines()
        return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
    return None


@preflight_check
def _plugins_load(cfg: Config, problems: Problems) -> None:
    """`reward.verifier` and `critic.rubric`, where set, load (any error of the plug-in, one
    line); the environment's own are checked with it (selfcritic/envs/registry.py)."""
    if cfg.reward.verifier is not None:
        verifier = load_problem(get_verifier, cfg.reward.verifier)
        problems.require(
            verifier is None,
            "reward.verifier",
            f"{verifier}; registered verifiers: {verifier_names()}, or an import path",
        )
    if cfg.critic.enabled and cfg.critic.rubric is not None:
        rubric = load_problem(load_rubric, cfg.critic.rubric)
        problems.require(rubric is None, "critic.rubric", str(rubric))
