"""Debug a verifier from the shell.

    python -m rewards list
    python -m rewards score NAME --response FILE [--reference FILE] [--tests FILE] [--option k=v]

`score` prints the RewardResult as JSON and exits 0 whatever the response does (a crash, a hang
or garbage is a score of 0 with the reason); it runs the verifier in a worker process with the
same timeout as training. `--tests` is the reference for code verifiers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from rewards import registry
from rewards.pool import VerifierPool


def _options(pairs: list[str]) -> dict:
    """k=v pairs; values read as YAML (numbers, booleans, strings)."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = yaml.safe_load(value)
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewards", description=__doc__.split("\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="registered verifiers and rubrics")
    score = commands.add_parser("score", help="score one response with one verifier")
    score.add_argument("name")
    score.add_argument("--response", type=Path, required=True)
    score.add_argument("--reference", type=Path)
    score.add_argument("--tests", type=Path, help="unit tests (the reference of code verifiers)")
    score.add_argument("--option", action="append", default=[], help="verifier option k=v")
    score.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.command == "list":
        print("verifiers:", ", ".join(registry.verifier_names()))
        print("rubrics:  ", ", ".join(registry.rubric_names()))
        return 0
    if not registry.verifier_exists(args.name):
        print(
            f"unknown verifier {args.name!r}; registered: {registry.verifier_names()}",
            file=sys.stderr,
        )
        return 2
    reference_file = args.tests or args.reference
    reference = reference_file.read_text() if reference_file else ""
    pool = VerifierPool(args.name, _options(args.option), workers=1, timeout_s=args.timeout)
    try:
        (result,), _ = pool.score([(args.response.read_text(errors="replace"), reference)])
    finally:
        pool.close()
    print(json.dumps({"score": result.score, "info": result.info}, default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
