"""`python -m selfcritic.eval CHECKPOINT [--env NAME] [KEY=VALUE ...]`: score a checkpoint.

CHECKPOINT is a Hugging Face model directory (a run's `checkpoint/`, a training checkpoint's
`model/`, or a warm-start). It is scored on an environment's held-out split: the environment's
own suite where it has one (the nano world's), else its held-out prompts scored by its verifier
(selfcritic/eval/held_out.py). The settings (the environment and its options, critic template
and mode, sampling) are those of the run that trained it when its `config.yaml` is found next to
the checkpoint (in the checkpoint's directory or up to two above: a run directory), else the
experiment's (`--experiment`, default nano); `--env NAME` (a registered environment or
"package.module:object") evaluates another environment, with its default options, and key=value
overrides (`env.max_operand=9`, `eval.samples=8`) apply on top. `--suite nano` is
`--env nano_world`. Prints the metrics as a table (stderr holds vLLM's logs) and writes them as
JSON with `--json FILE`. Exit status 2 on a bad checkpoint or setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SUITES = {"nano": "nano_world"}  # --suite NAME: the environment it names (kept as an alias)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfcritic.eval", description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--env", help="an environment: registered name or package.module:object")
    parser.add_argument("--suite", choices=sorted(SUITES), help="alias: nano is --env nano_world")
    parser.add_argument("--experiment", default="nano")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the metrics to this file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.samples=8")
    args = parser.parse_intermixed_args(argv)
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint} is not a Hugging Face model directory", file=sys.stderr)
        return 2
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM would log to stdout
    from selfcritic.config import ConfigError

    try:
        saved = run_config_of(args.checkpoint)
        if saved is not None:
            print(f"settings: {saved}", file=sys.stderr)
        env = args.env or (SUITES[args.suite] if args.suite else None)
        cfg = load_config(args.experiment, args.overrides, saved, env)
    except (ConfigError, Exception) as error:  # Hydra's composition errors name the key
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    from selfcritic.scratch import enter_scratch

    enter_scratch()  # the engine's temporary files in one place, removed at exit
    metrics = evaluate_checkpoint(args.checkpoint, cfg, args.seed)
    width = max(len(k) for k in metrics)
    print("\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items()))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1))
    return 0


def run_config_of(checkpoint: Path) -> Path | None:
    """The `config.yaml` of the run that wrote `checkpoint`, if it is there."""
    for directory in (checkpoint, *list(checkpoint.resolve().parents)[:2]):
        if (directory / "config.yaml").is_file():
            return directory / "config.yaml"
    return None


def load_config(
    experiment: str, overrides: list[str], saved: Path | None = None, env: str | None = None
):
    """The run's saved settings (or the experiment's), on environment `env` if given (its
    default options), with `overrides`, validated (the environment's options included)."""
    from omegaconf import OmegaConf

    from selfcritic.config import Config
    from selfcritic.preflight import validate
    from selfcritic.run import CONF_DIR, to_config

    if saved is not None:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(saved))
    else:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            merged = compose(config_name="config", overrides=[f"+experiment={experiment}"])
    OmegaConf.set_struct(merged, False)  # env.* keys are checked by the environment's options
    if env is not None and env != merged.env.name:
        merged.env = {"name": env}  # another environment: its own default options
        # what the run's training asked of its own environment does not bind this one
        merged.warmstart.enabled, merged.learner.ptx_weight = False, 0.0
        merged.critic.gate.source, merged.eval.every = None, 0  # require_held_out checks
    cfg = to_config(OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides)))
    validate(cfg)
    require_held_out(cfg)
    return cfg


def require_held_out(cfg) -> None:
    """The environment has something to evaluate: its own suite or a held-out split."""
    from selfcritic.config import ConfigError, keyed
    from selfcritic.envs.registry import build_environment, evaluable, parts

    for label, env in parts(build_environment(cfg.env, cfg)).items():
        if not evaluable(env):
            raise ConfigError(
                keyed("env.name", f"environment {label!r} has no held-out split to evaluate")
            )


def evaluate_checkpoint(checkpoint: Path, cfg, seed: int = 0) -> dict[str, float]:
    """The environment's held-out evaluation of `checkpoint`, served by an in-process vLLM
    engine."""
    import dataclasses

    from rewards.pool import verifier_pools
    from selfcritic.envs.registry import build_environment, parts
    from selfcritic.eval.held_out import evaluate_environment
    from selfcritic.model.build import load_tokenizer
    from selfcritic.rollout.vllm_engine import VLLMEngine

    environments = parts(build_environment(cfg.env, cfg))
    verifiers = verifier_pools(cfg.reward, environments)
    trust = cfg.model.trust_remote_code
    engine = VLLMEngine(checkpoint, dataclasses.replace(cfg.rollout, in_process=True), trust)
    try:
        tokenizer = load_tokenizer(checkpoint, trust)
        return evaluate_environment(environments, engine, tokenizer, cfg, verifiers, seed)
    finally:
        engine.shutdown()
        for pool in set(verifiers.values()) - {None}:
            pool.close()
        for env in environments.values():
            if hasattr(env, "close"):  # an environment's own processes (tool servers)
                env.close()


if __name__ == "__main__":
    sys.exit(main())
