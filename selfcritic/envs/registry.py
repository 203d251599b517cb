"""Environments by name: the registry, the options check, mixtures, and `env` for Hydra.

- `@register_environment(name, Options)` on a class (or function) `build(options, cfg)` that
  returns an `Environment` (selfcritic/envs/base.py); `Options` is a dataclass whose first field
  is `name`. Every registered environment is a Hydra choice, `env=NAME`, whose options appear
  under `env.*` with their defaults (a misspelled key fails while composing, naming it).
- A user's environment is named by import path, `env=custom env.name=package.module:object`:
  the object is an environment itself, or a `build(options, cfg)` with its options dataclass as
  the attribute `Options` (options then come as `+env.KEY=VALUE`, checked when it loads).
- `env=mix` trains on a weighted mixture (`Mixture`): `env.mix` lists the parts, each a
  `{name, weight, label, ...options}`; a step's prompts are split by weight, and every metric of
  the step is also reported per part (`env/<label>/...`).
Options are checked where they load (`options_of`): keys the options dataclass does not have,
values of the wrong type, and the field rules of its `setting(...)` metadata, as `env.KEY`. The
preflight builds the run's environments and refuses settings that need what they lack (PTX or a
warm-start without a corpus, evaluation without a held-out split, the gate without probes).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator
from typing import Any

from selfcritic.config import Config, ConfigError, keyed
from selfcritic.envs.base import Environment, EnvOptions, Prompt
from selfcritic.preflight import Problems, field_rule, fields_with_rules, preflight_check
from selfcritic.registry import Registry

Build = Callable[[Any, Config], Environment]  # (options, run config) -> environment


@dataclasses.dataclass(frozen=True)
class Entry:
    """How to build one kind of environment, and the dataclass of its options."""

    build: Build
    options: type


ENVIRONMENTS: Registry[Entry] = Registry("environment")
MIX, CUSTOM = "mix", "custom"  # the two Hydra choices that are not environments
# Packages whose import registers the built-in environments (imported by name on first use:
# they import this module, which imports none of them)
BUILT_IN = (
    "selfcritic.envs.nano",
    "selfcritic.envs.dataset",
    "selfcritic.envs.reasoning_gym_env",
    "selfcritic.envs.humaneval",
    "selfcritic.envs.tool_use",
    "selfcritic.envs.tool_sums",
)


def discover() -> None:
    """Import the built-in environments so they register."""
    for name in BUILT_IN:
        importlib.import_module(name)


def register_environment(name: str, options: type = EnvOptions) -> Callable[[Build], Build]:
    """Decorator: `build(options, cfg)` is the environment `name`, with `options` its options
    dataclass (its `name` field's default must be `name`)."""

    def decorate(build: Build) -> Build:
        ENVIRONMENTS.register(name)(Entry(build, options))
        return build

    return decorate


def entry(name: str) -> Entry:
    """A registered environment, or one named by import path "package.module:object"."""
    discover()
    if name in ENVIRONMENTS or ":" not in name:
        return ENVIRONMENTS.get(name)
    module_name, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise KeyError(f"environment {name!r} cannot be imported: {error}") from error
    if hasattr(found, "prompts") and not isinstance(found, type):
        return Entry(lambda options, cfg: found, EnvOptions)  # an environment object itself
    if not callable(found):
        raise KeyError(f"environment {name!r} is neither an environment nor callable")
    return Entry(found, getattr(found, "Options", EnvOptions))


def options_of(section: Any, key: str = "env") -> Any:
    """The options dataclass of the environment `section` names, filled from `section` (a
    dataclass or a mapping); every problem raises one ConfigError naming `key.FIELD`."""
    return _load(section, key)[1]


def _load(section: Any, key: str) -> tuple[Entry, Any]:
    """The entry of the environment `section` names, and its checked options."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = _get(section, "name")
    try:
        found = entry(str(name))
    except KeyError as error:
        raise ConfigError(keyed(f"{key}.name", str(error).strip('"'))) from error
    options_type = found.options
    if isinstance(section, options_type):
        options = section
    else:
        values = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
        unknown = [k for k in values if k not in {f.name for f in dataclasses.fields(options_type)}]
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(options_type))
            raise ConfigError(
                "\n".join(
                    keyed(
                        f"{key}.{k}",
                        f"not an option of environment {name!r} (its options: {known})",
                    )
                    for k in unknown
                )
            )
        try:
            options = OmegaConf.to_object(
                OmegaConf.merge(OmegaConf.structured(options_type), values)
            )
        except OmegaConfBaseException as error:
            where = f"{key}.{error.full_key}" if getattr(error, "full_key", None) else key
            raise ConfigError(keyed(where, str(error).splitlines()[0])) from error
    problems = Problems()
    for field_key, value, rules in fields_with_rules(options, f"{key}."):
        field_rule(problems, field_key, value, rules)
    if problems.lines:
        raise ConfigError("\n".join(problems.lines))
    return found, options


def _build(section: Any, cfg: Config, key: str = "env") -> Environment:
    found, options = _load(section, key)
    return found.build(options, cfg)


@dataclasses.dataclass
class MixOptions:
    """A weighted mixture of environments (`env=mix`)."""

    name: str = MIX
    # the parts: {name: ENV, weight: w (default 1), label: METRIC_NAME (default its name),
    # ...its options}
    mix: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def build_environment(section: Any, cfg: Config) -> Environment:
    """The run's environment: one, or a `Mixture` of several."""
    if _get(section, "name") == MIX:
        return Mixture(section, cfg)
    return _build(section, cfg)


def _get(section: Any, field: str) -> Any:
    """A field of an `env` section, a mapping (a saved config) or an options dataclass."""
    return section.get(field) if isinstance(section, dict) else getattr(section, field, None)


class Mixture:
    """Several environments in one run: each step's `count` prompts split by weight (largest
    remainders, ties to the earlier part), each prompt labelled with its part (`Prompt.env`)."""

    verifier = rubric = None  # each prompt's part decides (`part_of`)

    def __init__(self, section: Any, cfg: Config) -> None:
        parts = _get(section, "mix")
        if not parts:
            raise ConfigError(keyed("env.mix", "lists no environments; give at least one part"))
        self.name, self.parts, self.weights = MIX, {}, {}
        for index, part in enumerate(parts):
            where = f"env.mix.{index}"
            part = dict(part)
            weight, label = part.pop("weight", 1.0), str(part.pop("label", part.get("name")))
            if not isinstance(weight, int | float) or not weight > 0:
                raise ConfigError(keyed(f"{where}.weight", f"must be a number > 0, got {weight!r}"))
            if label in self.parts:
                raise ConfigError(keyed(f"{where}.label", f"{label!r} names two parts; label them"))
            self.parts[label] = _build(part, cfg, where)
            self.weights[label] = float(weight)
        # the driver's turn limit: a part that ends its episodes sooner ends them itself
        self.max_turns = max(getattr(env, "max_turns", 1) for env in self.parts.values())
        # the episode driver's settings, over the parts that have them: the tightest budget,
        # the most parallel steps
        budgets = [getattr(e, "max_observation_tokens", None) for e in self.parts.values()]
        self.max_observation_tokens = min((b for b in budgets if b), default=None)
        self.parallel_steps = max(getattr(e, "parallel_steps", 1) for e in self.parts.values())

    def counts(self, count: int) -> dict[str, int]:
        """How many of `count` prompts each part gives (largest remainders)."""
        total = sum(self.weights.values())
        exact = {label: count * w / total for label, w in self.weights.items()}
        counts = {label: int(share) for label, share in exact.items()}
        order = sorted(exact, key=lambda label: counts[label] - exact[label])
        for label in order[: count - sum(counts.values())]:
            counts[label] += 1
        return counts

    def prompts(self, step: int, draw: int, count: int) -> list[Prompt]:
        prompts = []
        for label, part_count in self.counts(count).items():
            if part_count:
                drawn = self.parts[label].prompts(step, draw, part_count)
                prompts += [dataclasses.replace(p, env=label) for p in drawn]
        return prompts

    def held_out(self) -> list[Prompt]:
        return [
            dataclasses.replace(p, env=label)
            for label, env in self.parts.items()
            for p in env.held_out()
        ]

    def part_of(self, prompt: Prompt) -> Environment:
        return self.parts[prompt.env]

    def reset(self, prompt: Prompt):
        return self.part_of(prompt).reset(prompt)

    def step(self, episode, turn: str, turn_ids: tuple[int, ...]):
        return self.part_of(episode.prompt).step(episode, turn, turn_ids)

    def close_episode(self, episode) -> None:
        close = getattr(self.part_of(episode.prompt), "close_episode", None)
        if close is not None:
            close(episode)


def parts(env: Environment) -> dict[str, Environment]:
    """{label: environment} of a run's environment (itself, unless it is a mixture)."""
    return dict(env.parts) if isinstance(env, Mixture) else {env.name: env}


def label_prompts(env: Environment, prompts: list[Prompt]) -> list[Prompt]:
    """Prompts of a single environment labelled with its name (a mixture labels its own)."""
    if isinstance(env, Mixture):
        return prompts
    return [p if p.env else dataclasses.replace(p, env=env.name) for p in prompts]


def environment_configs() -> Iterator[tuple[str, Any]]:
    """(choice, node) of the Hydra config group `env`: every registered environment's options
    dataclass, `mix` and `custom` (an environment by import path, `env.name=pkg.mod:obj`)."""
    discover()
    for name in ENVIRONMENTS.names():
        yield name, ENVIRONMENTS.get(name).options
    yield MIX, MixOptions
    yield CUSTOM, {"name": CUSTOM}


def register_environment_configs() -> None:
    """Store `environment_configs()` in Hydra's ConfigStore (before composing)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for choice, node in environment_configs():
        store.store(group="env", name=choice, node=node)


@preflight_check
def _environment_builds(cfg: Config, problems: Problems) -> None:
    """`env` names a registered environment or an importable one (`env=custom env.name=
    pkg.mod:obj`), its options are its dataclass's fields within their rules, it builds, and
    it has what the settings ask of it: a corpus for `warmstart.enabled` and
    `learner.ptx_weight`, a held-out split for `eval.every`, probes for `critic.gate.source=env`."""
    if _get(cfg.env, "name") == CUSTOM:
        problems.require(False, "env.name", "env=custom needs env.name=package.module:object")
        return
    try:
        env = build_environment(cfg.env, cfg)
    except ConfigError as error:
        problems.lines.extend(str(error).splitlines())
        return
    except Exception as error:  # a user's environment failing to build, on one line
        problems.require(False, "env.name", f"{_get(cfg.env, 'name')!r} fails to build: {error!r}")
        return
    for label, part in parts(env).items():
        key = "env" if not isinstance(env, Mixture) else f"env.mix[{label}]"
        if hasattr(part, "check"):
            part.check(problems, key)
        require_parts(cfg, problems, label, part)


def evaluable(env: Environment) -> bool:
    """Whether `env` has something to evaluate: its own suite or a held-out split."""
    if hasattr(env, "held_out_count"):  # without building the prompts (tool_use: no servers)
        return hasattr(env, "evaluate") or env.held_out_count() > 0
    return hasattr(env, "evaluate") or bool(env.held_out())


def require_parts(cfg: Config, problems: Problems, label: str, env: Environment) -> None:
    """What the settings ask of environment `label`, and its verifier and rubric load."""
    from rewards.registry import get_verifier, load_problem, load_rubric

    lacks = f"environment {label!r} has no"
    verifier = cfg.reward.verifier is None and env.verifier
    problem = verifier and load_problem(get_verifier, verifier)
    problems.require(not problem, "env.name", f"{label!r}'s verifier {verifier!r}: {problem}")
    rubric = cfg.critic.enabled and cfg.critic.rubric is None and env.rubric
    problem = rubric and load_problem(load_rubric, rubric)
    problems.require(not problem, "env.name", f"{label!r}'s rubric {rubric!r}: {problem}")
    problems.require(
        not cfg.critic.enabled or bool(cfg.critic.rubric or env.rubric),
        "critic.rubric",
        f"environment {label!r} names no rubric for the critic; set critic.rubric",
    )
    corpus = hasattr(env, "corpus")
    problems.require(
        not cfg.warmstart.enabled or corpus,
        "warmstart.enabled",
        f"{lacks} supervised corpus (`corpus`); set warmstart.enabled=false",
    )
    problems.require(
        cfg.learner.ptx_weight == 0 or (corpus and cfg.warmstart.ptx_per_step > 0),
        "learner.ptx_weight",
        f"PTX draws warmstart.ptx_per_step pairs of the environment's corpus, and {lacks} "
        "corpus or ptx_per_step is 0; set learner.ptx_weight=0"
        if not corpus
        else "PTX needs warmstart.ptx_per_step > 0; set one of them",
    )
    problems.require(
        cfg.eval.every == 0 or evaluable(env),
        "eval.every",
        f"{lacks} held-out split (`held_out()` is empty) nor an own suite; set eval.every=0",
    )
    problems.require(
        not cfg.critic.enabled or cfg.critic.gate.source != "env" or hasattr(env, "probes"),
        "critic.gate.source",
        f"{lacks} critic probes (`probes`); give a JSONL file of labelled pairs, or null",
    )
