"""`model.trust_remote_code`: a checkpoint whose tokenizer class lives in its own code file.

transformers falls back to a stock class when it may not run the checkpoint's code (silently:
the tokenizer then misses whatever the code does); with the setting, the trainer, the engines
and the learner load the checkpoint's own classes, and the checkpoints it writes carry the code.
"""

from __future__ import annotations

import json
import shutil

from hydra import compose, initialize_config_dir

from selfcritic.model.build import load_tokenizer
from selfcritic.preflight import validate
from selfcritic.run import CONF_DIR, to_config

CODE = '''from transformers import PreTrainedTokenizerFast


class ShoutTokenizer(PreTrainedTokenizerFast):
    """Marks itself, so a test can tell it was loaded."""

    shouts = True
'''


def test_the_checkpoints_own_tokenizer_code_runs_when_trusted(nano_model_path, tmp_path, cache_dir):
    from selfcritic.trainer import Trainer

    model = tmp_path / "custom"
    shutil.copytree(nano_model_path, model)
    (model / "tokenization_shout.py").write_text(CODE)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config |= {
        "tokenizer_class": "ShoutTokenizer",
        "auto_map": {"AutoTokenizer": [None, "tokenization_shout.ShoutTokenizer"]},
    }
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    assert not hasattr(load_tokenizer(model), "shouts")  # untrusted: the stock class
    assert load_tokenizer(model, trust_remote_code=True).shouts

    settings = ["+experiment=nano_quick", f"model.path={model}", "model.trust_remote_code=true"]
    settings += ["trainer.steps=1", "eval.every=0", f"trainer.cache_dir={cache_dir}"]
    settings += ["tracking.wandb_mode=disabled", "critic.enabled=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=settings))
    validate(cfg)
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.run()  # the engines (vLLM) and the learner start with the setting on
    assert trainer.tokenizer.shouts
    checkpoint = tmp_path / "run" / "checkpoint"
    assert (checkpoint / "tokenization_shout.py").read_text() == CODE
    assert load_tokenizer(checkpoint, trust_remote_code=True).shouts
