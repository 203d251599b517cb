"""Entry point: `python -m selfcritic.run +experiment=NAME [overrides]`.

Hydra composes conf/config.yaml with the typed schema (unknown keys and wrong types fail there,
naming the key), the preflight (selfcritic/preflight.py) checks every value before any work
starts, then the trainer runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rewards.pool import VerifierFailing
from selfcritic.checkpoint import check_output_dir
from selfcritic.config import Config, ConfigError, register_configs
from selfcritic.envs.registry import register_environment_configs
from selfcritic.preflight import validate
from selfcritic.scratch import enter_scratch

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

register_configs()
register_environment_configs()  # the `env` group: every registered environment's options


def to_config(cfg: DictConfig) -> Config:
    """The composed DictConfig as the typed dataclass tree."""
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, Config), f"composed config is {type(config)}, expected Config"
    return config


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from selfcritic.trainer import Trainer

    config = to_config(cfg)
    output_dir = Path(config.trainer.output_dir or HydraConfig.get().runtime.output_dir)
    try:
        validate(config)
        check_output_dir(output_dir, config.trainer)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"output directory: {output_dir}")
    enter_scratch()  # what killed runs left goes; this run's temporary files go in one place
    try:
        Trainer(config, output_dir).run()
    except ConfigError as error:  # found while setting up (e.g. Ray has too few CPUs)
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except VerifierFailing as error:
        print(f"stopped: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
