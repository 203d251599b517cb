"""Metrics to wandb and to a local `metrics.jsonl`, and the console line of a step (printed by
selfcritic/progress.py).

wandb runs online when the user is logged in to wandb and offline otherwise (sync later with
`wandb sync`) by default (`tracking.wandb_mode=auto`), or as configured, and is a
no-op when disabled (tests). Every logged dict is also appended as one JSON line, so curves can be
read without wandb (`python -m selfcritic.plot RUN_DIR` draws them). wandb groups panels by the
metric-name prefix: reward/, critic/, learner/, rollout/, muonclip/, moe/, time/; the dashboard
of selfcritic/panels.py is a workspace `python -m selfcritic.dashboard` creates. Sample tables
(prompt, response, verifier and critic scores, reward, the critic's pair outcomes) go to wandb as
a Table and to `samples.jsonl`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

from selfcritic.config import TrackingConfig

METRICS, SAMPLES = "metrics.jsonl", "samples.jsonl"
APPEND_ONLY = (METRICS, SAMPLES)  # the run's files that grow by one JSON line per record


class Tracker:
    def __init__(
        self, cfg: TrackingConfig, output_dir: Path, config: dict, run_id: str | None = None
    ) -> None:
        """`run_id`: continue that wandb run (a resumed training run), else start a new one."""
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        output_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=cfg.project,
            name=cfg.run_name,
            mode=resolve_wandb_mode(cfg.wandb_mode),
            dir=str(output_dir),
            config=config,
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.metrics_path = output_dir / METRICS

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None)

    def truncate_after(self, step: int) -> None:
        """Cut every append-only record file (`APPEND_ONLY`) back to `step`: a run killed after
        its last checkpoint logged later steps, which the resumed run logs again."""
        for name in APPEND_ONLY:
            truncate_records(self.metrics_path.parent / name, step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **metrics}
        with self.metrics_path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        self.run.log(metrics, step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        """One table of samples: to `samples.jsonl` (one line per row) and to wandb."""
        if not rows:
            return
        with (self.metrics_path.parent / SAMPLES).open("a") as stream:
            for row in rows:
                stream.write(json.dumps({"step": step, **row}) + "\n")
        import wandb

        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
        self.run.log({"samples": table}, step=step)

    def log_report(self, table: str, figure: Path) -> None:
        """The end-of-run report: its figure and table to wandb (the files are already in the
        run directory)."""
        import wandb

        self.run.log({"report/curves": wandb.Image(str(figure))})
        self.run.summary["report"] = table

    def finish(self) -> None:
        self.run.finish()


def json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(line, record) for each line of `path` holding a JSON object; a half-written or foreign
    line (a run killed while writing) is skipped."""
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield line, record


def truncate_records(path: Path, step: int) -> None:
    """Keep the JSON lines of `path` whose "step" is at most `step`; drop the later ones and any
    half-written line. Rewritten atomically, so a kill during the cut loses nothing kept."""
    if not path.exists():
        return
    kept = [line for line, record in json_lines(path) if record.get("step", 0) <= step]
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("".join(f"{line}\n" for line in kept))
    staging.replace(path)


def resolve_wandb_mode(setting: str) -> str:
    """ "auto": online when this user is logged in to wandb (WANDB_API_KEY set, or the
    api.wandb.ai entry `wandb login` writes to ~/.netrc), otherwise offline."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return "online" if logged_in else "offline"


_SHOWN_WHEN_NONZERO = {"reward/verifier_failed"}  # shown on the steps where something failed


def console_line(step: int, steps: int, metrics: dict[str, float]) -> str:
    """A compact progress line with the headline metrics and phase timings."""
    keys = (
        ("reward", "reward/mean"),
        ("acc", "reward/verifiable_mean"),
        ("verify_failed", "reward/verifier_failed"),
        ("critic_invalid", "critic/invalid_rate"),
        ("critic_consistent", "critic/position_consistency"),
        ("loss", "learner/loss"),
        ("lp_diff", "learner/logprob_diff_max"),
        ("lp_diff_mean", "learner/logprob_diff_mean"),
        ("tis_clipped", "learner/tis_clipped_fraction"),
        ("rollout_s", "time/rollout"),
        ("critic_s", "time/critic"),
        ("learn_s", "time/learn"),
        ("sync_s", "time/sync"),
    )
    parts = [f"step {step}/{steps}"]
    for label, key in keys:
        value = metrics.get(key)
        if key in _SHOWN_WHEN_NONZERO and not value:
            continue
        if value is not None and not math.isnan(value):
            parts.append(f"{label}={value:.3g}")
    return "  ".join(parts)
