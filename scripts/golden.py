"""The golden regression check: a reference commit and the working tree, run the same way on
this machine, must give the same results exactly.

    .venv/bin/python scripts/golden.py REF [--out DIR] [--cache-dir DIR] [--keep]

For REF (checked out into a temporary git worktree) and for the working tree, it runs
- `+experiment=nano_quick` (10 steps from the random model, a sample table every step);
- 5 steps of `+experiment=nano` on the cached warm-start (the first run builds the cache,
  about 6.5 minutes; both trees then share it while its key is unchanged), with the held-out
  evaluation before and after (accuracy, defects, and the critic's verdicts on the frozen
  held-out pairs: agreement, invalid, position consistency, injection flips) and a sample table
  every step (each response's rewards and the critic's pair outcomes);
- `python -m selfcritic.eval` on that run's final checkpoint (the evaluation CLI's own path);
and compares every metric of every step (wall-clock timings aside), every sample row, the
evaluation CLI's metrics and the final weights (SHA-256), exactly: CPU float32 is
bit-deterministic on one machine. Different CPUs give different numbers, which is why the
results are compared between two runs here and no digest is stored anywhere. Exit status 0 when
all match, 1 when anything differs (the first differences are printed), 2 when a run failed.

The reference runs from its worktree with PYTHONPATH pointing there: the path finder comes
before the editable install's finder, in the driver and in the Ray workers it starts. The script
checks that the reference's package is the one imported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMON = ["tracking.wandb_mode=disabled", "tracking.samples_every=1"]
RUNS = {
    "nano_quick": ["+experiment=nano_quick"],
    "nano_5": ["+experiment=nano", "trainer.steps=5", "eval.every=5"],
}
EVAL_OF = "nano_5"  # the run whose final checkpoint the evaluation CLI scores


def _env(tree: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(tree), "WANDB_MODE": "disabled"}


def _check_imports_from(tree: Path) -> None:
    probe = "import selfcritic, rewards; print(selfcritic.__file__); print(rewards.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=_env(tree), capture_output=True, text=True
    )
    paths = out.stdout.split()
    if out.returncode != 0 or not all(Path(p).is_relative_to(tree) for p in paths):
        sys.exit(f"golden: the package imported for {tree} is not its own: {paths or out.stderr}")


def run_tree(tree: Path, out: Path, cache_dir: Path) -> None:
    """The runs and the evaluation of one tree into `out`."""
    _check_imports_from(tree)
    for name, overrides in RUNS.items():
        command = [
            sys.executable,
            "-m",
            "selfcritic.run",
            *overrides,
            *COMMON,
            f"trainer.output_dir={out / name}",
            f"trainer.cache_dir={cache_dir}",
        ]
        _run(command, tree, out / f"{name}.log")
    command = [
        sys.executable,
        "-m",
        "selfcritic.eval",
        str(out / EVAL_OF / "checkpoint"),
        "--suite",
        "nano",
        "--json",
        str(out / "eval.json"),
    ]
    _run(command, tree, out / "eval.log")


def _run(command: list[str], tree: Path, log: Path) -> None:
    print(f"golden: {tree.name}: {' '.join(command[1:4])} ...", flush=True)
    with log.open("w") as stream:
        result = subprocess.run(command, cwd=tree, env=_env(tree), stdout=stream, stderr=stream)
    if result.returncode != 0:
        print(f"golden: failed (rc {result.returncode}), see {log}", file=sys.stderr)
        sys.exit(2)


def _timing(key: str) -> bool:
    return key.startswith("time/") or "per_second" in key


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN


def compare_records(name: str, a: list[dict], b: list[dict]) -> list[str]:
    """Differences between the reference's records `a` and the tree's `b` (timings ignored):
    a value changed, or a key the reference has that the tree lost. Keys only the tree has are
    new metrics, not regressions: `new_keys` lists them."""
    if len(a) != len(b):
        return [f"{name}: {len(a)} records against {len(b)}"]
    problems = []
    for index, (left, right) in enumerate(zip(a, b, strict=True)):
        keys = sorted(k for k in left if not _timing(k))
        for key in keys:
            if key not in right or not _same(left[key], right[key]):
                where = f"step {left.get('step')}" if "step" in left else f"record {index}"
                problems.append(f"{name}, {where}: {key}: {left.get(key)!r} != {right.get(key)!r}")
    return problems


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(ref: Path, tree: Path) -> list[str]:
    problems = []
    for name in RUNS:
        for records in ("metrics.jsonl", "samples.jsonl"):
            problems += compare_records(
                f"{name}/{records}", _jsonl(ref / name / records), _jsonl(tree / name / records)
            )
        weights = "checkpoint/model.safetensors"
        if _digest(ref / name / weights) != _digest(tree / name / weights):
            problems.append(f"{name}: final weights differ")
    evaluated = [json.loads((d / "eval.json").read_text()) for d in (ref, tree)]
    problems += compare_records("selfcritic.eval", [evaluated[0]], [evaluated[1]])
    return problems


def new_keys(ref: Path, tree: Path) -> set[str]:
    """Metric keys the working tree logs that the reference does not."""
    found: set[str] = set()
    for name in RUNS:
        old = {k for r in _jsonl(ref / name / "metrics.jsonl") for k in r}
        found |= {k for r in _jsonl(tree / name / "metrics.jsonl") for k in r} - old
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="the reference commit (e.g. main, a sha)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary dir)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/selfcritic"))
    parser.add_argument("--keep", action="store_true", help="keep the runs and the worktree")
    args = parser.parse_args()
    if args.out and args.out.exists() and any(args.out.iterdir()):
        # runs there would resume the old ones (or be refused as changed settings)
        parser.error(f"--out {args.out} is not empty: give a new or empty directory")
    out = args.out or Path(tempfile.mkdtemp(prefix="golden-"))
    worktree = out / "ref-tree"
    cache_dir = args.cache_dir.expanduser()
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(worktree), args.ref], cwd=REPO, check=True
    )
    try:
        for tree, results in ((worktree, out / "ref"), (REPO, out / "tree")):
            results.mkdir(parents=True, exist_ok=True)
            run_tree(tree, results, cache_dir)
        problems = compare(out / "ref", out / "tree")
        added = new_keys(out / "ref", out / "tree")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    for line in problems[:40]:
        print(line)
    if added:
        print(f"golden: new keys in the working tree (not compared): {sorted(added)}")
    verdict = "differs" if problems else "matches"
    print(f"golden: the working tree {verdict} {args.ref} ({len(problems)} differences)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
