"""The run dashboard as a wandb workspace: `python -m selfcritic.dashboard RUN_OR_PROJECT`.

Builds a workspace from the sections and panels of selfcritic/panels.py with the
`wandb-workspaces` library and saves it as a new view of the project (each call adds one; the
URL is printed). RUN_OR_PROJECT is `ENTITY/PROJECT`, `ENTITY/PROJECT/RUN_ID` or a run's URL
(`https://wandb.ai/ENTITY/PROJECT/runs/RUN_ID`); with a run, the workspace's run set is
filtered to that run. `--dry-run` prints, as JSON, the view it would send (the same
serialisation `Workspace.save` uploads) and touches no network. Saving needs a wandb login
(`wandb login` or WANDB_API_KEY).

Left out: wandb's automatic panels (the project's default workspace keeps them), panel sizes
and colours, and pruning panels a project never logs (a panel with no data shows as empty).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from urllib.parse import urlparse

from selfcritic.panels import SECTIONS, Panel, Section

DEFAULT_NAME = "selfcritic"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # an entity, project or run id


class DashboardError(ValueError):
    """The RUN_OR_PROJECT argument is malformed."""


@dataclass(frozen=True)
class Target:
    """Where the workspace goes, and the run it shows (None: every run of the project)."""

    entity: str
    project: str
    run: str | None = None


def parse_target(text: str) -> Target:
    """`ENTITY/PROJECT`, `ENTITY/PROJECT/RUN_ID`, `ENTITY/PROJECT/runs/RUN_ID` or such a path
    in an http(s) URL (a project URL, `/workspace` and query strings allowed)."""
    usage = (
        f"{text!r}: expected ENTITY/PROJECT, ENTITY/PROJECT/RUN_ID or a run URL "
        "(https://wandb.ai/ENTITY/PROJECT/runs/RUN_ID)"
    )
    path = text.strip()
    if "://" in path:
        url = urlparse(path)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise DashboardError(usage)
        path = url.path
    parts = [part for part in path.strip("/").split("/") if part]
    if len(parts) == 3 and parts[2] == "workspace":
        parts = parts[:2]
    if len(parts) == 4 and parts[2] == "runs":
        parts = [parts[0], parts[1], parts[3]]
    if len(parts) not in (2, 3) or parts[2:] == ["runs"]:
        raise DashboardError(usage)
    bad = [part for part in parts if not _NAME.fullmatch(part)]
    if bad:
        raise DashboardError(f"{usage}; {bad[0]!r} is not a wandb name")
    return Target(*parts)


def line_plot(panel: Panel):
    """The wandb line plot of a panel: its metrics, or its pattern as the metric regex."""
    import wandb_workspaces.reports.v2 as wr

    if panel.pattern is not None:
        return wr.LinePlot(title=panel.title, metric_regex=panel.pattern)
    return wr.LinePlot(title=panel.title, y=list(panel.metrics))


def build_workspace(target: Target, name: str = DEFAULT_NAME, sections=SECTIONS):
    """The `wandb_workspaces` Workspace of `sections` for `target` (built offline)."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    def section(spec: Section):
        panels = [line_plot(panel) for panel in spec.panels]
        return ws.Section(name=spec.title, panels=panels, is_open=spec.is_open)

    runset = ws.RunsetSettings()
    if target.run is not None:
        runset = ws.RunsetSettings(filters=expr.And(expr.Metric("ID") == target.run))
    return ws.Workspace(
        entity=target.entity,
        project=target.project,
        name=name,
        sections=[section(spec) for spec in sections],
        runset_settings=runset,
    )


def view_spec(workspace) -> dict:
    """What `Workspace.save` sends, as a dict: entity, project, display name and the view's
    spec (the library serialises it the same way, by alias, without None fields)."""
    view = workspace._to_model()  # the library's own conversion, as save() calls it
    return {
        "entityName": view.entity,
        "projectName": view.project,
        "displayName": view.display_name,
        "spec": json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfcritic.dashboard",
        description="Create the selfcritic dashboard as a wandb workspace of a project or run.",
    )
    parser.add_argument(
        "target",
        metavar="RUN_OR_PROJECT",
        help="ENTITY/PROJECT, ENTITY/PROJECT/RUN_ID or a run URL",
    )
    parser.add_argument(
        "--name", help=f"the workspace's name (default {DEFAULT_NAME!r}; with a run, plus its id)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the view as JSON, send nothing"
    )
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.target)
    except DashboardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = args.name or (f"{DEFAULT_NAME} {target.run}" if target.run else DEFAULT_NAME)
    workspace = build_workspace(target, name)
    if args.dry_run:
        print(json.dumps(view_spec(workspace), indent=1))
        return 0
    try:
        workspace.save()
        url = workspace.url
    except Exception as error:  # wandb's own: not logged in, no network, no such project
        print(
            f"error: could not save the workspace to {target.entity}/{target.project}: "
            f"{type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
