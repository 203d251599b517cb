"""The one check of a run's settings, before any work (Ray, engines, model build, warm-start).

Two kinds of rules, one report:
- field rules, declared beside each field in selfcritic/config.py (`setting(default, ge=...,
  one_of=..., path=...)`): checked here for every field of the tree;
- component rules, cross-field and plug-in checks that live beside the code they guard and
  register themselves with `@preflight_check` (the critic's template and schedule, the gate's
  probe file, the learner's loss and estimator, the verifier and rubric, Ray's CPUs, the
  environment's options and what the settings ask of it, ...). `CHECKED_MODULES` lists the
  modules that hold them.
`validate(cfg)` runs every rule and raises one `ConfigError` with every problem, a line each,
each naming its key and what to do. `context_problems` is the one rule that needs the
tokenizer: the trainer runs it as soon as the tokenizer is there, before the warm-start, Ray and
the engines. Left out: checks that need a running cluster (a joined Ray cluster's size is
checked when Ray starts) or the output directory's contents (checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import operator
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from selfcritic.config import Config, ConfigError, keyed
from selfcritic.registry import Registry

# Modules whose import registers component rules (each guards its own settings).
CHECKED_MODULES = (
    "rewards.registry",
    "selfcritic.cluster",
    "selfcritic.schedule",
    "selfcritic.critic.prompts",
    "selfcritic.critic.schedule",
    "selfcritic.critic.injection",
    "selfcritic.critic.calibration",
    "selfcritic.critic.gate",
    "selfcritic.learner.losses",
    "selfcritic.learner.advantages",
    "selfcritic.model.families",
    "selfcritic.optim.muonclip",
    "selfcritic.rollout.engines",
    "selfcritic.rollout.partial",
    "selfcritic.rollout.placement",
    "selfcritic.envs.registry",
)


class Problems:
    """What the rules found: `require` records one line per failed condition."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def require(self, condition: bool, key: str, problem: str) -> None:
        if not condition:
            self.lines.append(keyed(key, problem))


BOUNDS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}
Check = Callable[[Config, Problems], None]
_CHECKS: list[Check] = []


def preflight_check(check: Check) -> Check:
    """Decorator: run `check(cfg, problems)` in every preflight."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def validate(cfg: Config) -> None:
    """Every field and component rule; raise ConfigError listing each problem on its line."""
    problems = Problems()
    for key, value, rules in fields_with_rules(cfg):
        field_rule(problems, key, value, rules)
    bad_fields = bool(problems.lines)
    for check in registered_checks():
        try:
            check(cfg, problems)
        except Exception:  # a rule tripped by a value already reported above
            if not bad_fields:
                raise
    if problems.lines:
        raise ConfigError("\n".join(dict.fromkeys(problems.lines)))


def require_registered(registry: Registry, key: str, module: str) -> Check:
    """Register the rule that the setting `key` (dotted) names an entry of `registry`;
    `module` is the registering module's `__name__` (the rule's place in the report)."""

    def check(cfg: Config, problems: Problems) -> None:
        value = functools.reduce(getattr, key.split("."), cfg)
        names = ", ".join(registry.names())
        problems.require(
            value in registry, key, f"unknown {registry.kind} {value!r}; registered: {names}"
        )

    check.__doc__ = f"`{key}` names a registered {registry.kind}."
    check.__module__, check.__name__ = module, f"_{key.replace('.', '_')}_registered"
    return preflight_check(check)


def registered_checks() -> list[Check]:
    """Every component rule, in `CHECKED_MODULES` order (not import order: the same report
    whatever was imported first)."""
    for name in CHECKED_MODULES:
        importlib.import_module(name)
    rank = {name: index for index, name in enumerate(CHECKED_MODULES)}
    return sorted(_CHECKS, key=lambda c: (rank.get(c.__module__, len(rank)), c.__name__))


def fields_with_rules(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, dict]]:
    """(dotted key, value, declared rules) of every field of a config dataclass tree."""
    for item in dataclasses.fields(node):
        value, key = getattr(node, item.name), f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            yield from fields_with_rules(value, f"{key}.")
        else:
            yield key, value, dict(item.metadata)


def field_rule(problems: Problems, key: str, value: Any, rules: dict) -> None:
    """Check one value against its declared rules (a number must also be finite)."""
    if value is None:
        return
    why = f" ({rules['why']})" if "why" in rules else ""
    if "one_of" in rules:
        choices = ", ".join(rules["one_of"])
        problems.require(value in rules["one_of"], key, f"must be one of {choices}{why}")
    if "path" in rules:
        problems.require(*_path_rule(key, str(value), rules["path"]))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not math.isfinite(value):
        problems.require(False, key, f"must be a finite number, got {value}")
        return
    declared = [(name, sign, test) for name, (sign, test) in BOUNDS.items() if name in rules]
    wanted = " and ".join(f"{sign} {rules[name]:g}" for name, sign, _ in declared)
    ok = all(test(value, rules[name]) for name, _, test in declared)
    problems.require(ok, key, f"must be {wanted}, got {value:g}{why}")


def _path_rule(key: str, value: str, kind: str) -> tuple[bool, str, str]:
    path = Path(value).expanduser()
    if kind == "hf_model":
        return (
            (path / "config.json").is_file(),
            key,
            f"{value!r} is not a Hugging Face checkpoint directory (no config.json)",
        )
    return (
        not path.exists() or path.is_dir(),
        key,
        f"{value!r} is a file; it must name a directory (new or existing)",
    )


def context_problems(
    cfg: Config,
    encode: Callable[[str], list[int]],
    questions: list[str],
    aspects: list[tuple],
    critic_prompt: Callable[[str, str, str], str] | None = None,
) -> list[str]:
    """The lengths rule, with the tokenizer (`encode`) and the first step's `questions`: refuse
    only what cannot fit the engines' context (`rollout.max_model_len`): a prompt plus
    `sampling.max_tokens`, or a critic prompt (`critic_prompt(question, aspect, description)`
    with empty responses, for the longest question and `aspects`' longest (name, description),
    plus responses of `critic.min_response_tokens` each) plus its answer. Anything longer at run
    time has its responses cut in critic prompts, or is skipped, counted."""
    problems, limit = Problems(), cfg.rollout.max_model_len
    longest = max(questions, key=lambda q: len(encode(q)), default="")
    prompt = len(encode(longest))
    problems.require(
        prompt + cfg.sampling.max_tokens <= limit,
        "sampling.max_tokens",
        f"the longest prompt of the first step ({prompt} tokens) plus sampling.max_tokens="
        f"{cfg.sampling.max_tokens} passes rollout.max_model_len={limit}: lower one, or raise "
        "rollout.max_model_len",
    )
    critic = cfg.critic
    if critic.enabled and aspects and critic_prompt is not None:
        name, description = max(aspects, key=lambda a: len(a[0]) + len(a[1]))
        empty = critic_prompt(longest, name, description)
        answer = 1 if critic.verdict_mode == "probability" else critic.max_tokens
        needed = len(encode(empty)) + 2 * critic.min_response_tokens + answer
        problems.require(
            needed <= limit,
            "critic.min_response_tokens",
            f"a critic prompt needs {needed} tokens (template and longest question "
            f"{needed - 2 * critic.min_response_tokens - answer}, two responses of "
            f"{critic.min_response_tokens}, the answer {answer}) but rollout.max_model_len="
            f"{limit}: raise rollout.max_model_len, or lower critic.min_response_tokens or "
            "critic.max_tokens",
        )
    return problems.lines


def rules_table() -> str:
    """docs/running.md's table of checked settings: every field rule, then every component rule
    (`python -m selfcritic.preflight` prints it; a test keeps the docs equal to it)."""
    rows = ["| setting | checked before any work |", "| --- | --- |"]
    for key, _, rules in fields_with_rules(Config()):
        described = _describe(rules)
        if described:
            rows.append(f"| `{key}` | {described} |")
    environments = importlib.import_module("selfcritic.envs.registry")
    for choice, node in environments.environment_configs():  # each environment's options
        if not dataclasses.is_dataclass(node):
            continue
        for key, _, rules in fields_with_rules(node(), "env."):
            described = _describe(rules)
            if described:
                rows.append(f"| `{key}` (env={choice}) | {described} |")
    for check in registered_checks():
        doc = (check.__doc__ or check.__name__.strip("_").replace("_", " ")).split("\n\n")[0]
        rows.append(f"| ({check.__module__}) | {' '.join(doc.split())} |")
    rows.append(
        "| (selfcritic.preflight.context_problems) | with the tokenizer: a prompt plus "
        "`sampling.max_tokens`, and a critic prompt with `critic.min_response_tokens` per "
        "response, fit `rollout.max_model_len`; each verdict letter is one token |"
    )
    return "\n".join(rows)


def _describe(rules: dict) -> str:
    parts = []
    if "one_of" in rules:
        parts.append("one of " + ", ".join(f"`{choice}`" for choice in rules["one_of"]))
    bounds = [f"{BOUNDS[name][0]} {rules[name]:g}" for name in BOUNDS if name in rules]
    if bounds:
        parts.append("finite, " + " and ".join(bounds))
    if rules.get("path") == "hf_model":
        parts.append("a Hugging Face model directory (config.json)")
    elif rules.get("path") == "dir_or_absent":
        parts.append("a directory, or nothing yet (never a file)")
    return "; ".join(parts)


if __name__ == "__main__":  # through the package's module, where the components register
    from selfcritic.preflight import rules_table as table_of_the_package

    print(table_of_the_package())
