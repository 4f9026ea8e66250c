"""``lockstep artifacts``: the registry of immutable builds (read through the artifacts
service's public face)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import views
from cli.publish import Label
from cli.root import of

artifacts_app = typer.Typer(help="The registry of immutable builds.", no_args_is_help=True)


@artifacts_app.command("list")
def artifacts_list(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option(help="Only this service")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Registered artifacts, newest first."""
    root = of(ctx)
    with root.postgres_errors():
        views.print_artifact_list(root.out, root.settings, service, limit)


@artifacts_app.command("show")
def artifacts_show(ctx: typer.Context, artifact: Label) -> None:
    """One artifact: digest, commit, status, evidence and any rejections."""
    root = of(ctx)
    ref = root.parse_label(artifact)
    with root.postgres_errors():
        known = views.print_artifact(root.out, root.settings, ref)
    if not known:
        raise root.fail(f"nothing known about {ref.label}", code=1)
