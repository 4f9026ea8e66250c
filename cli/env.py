"""``lockstep env``: environments and what runs in them (the promotion service's ledger,
through its public face)."""

from __future__ import annotations

import typer

from cli import views
from cli.root import of

env_app = typer.Typer(help="Environments and what runs in them.", no_args_is_help=True)


@env_app.command("status")
def env_status(ctx: typer.Context) -> None:
    """What runs where: services x environments, with versions and digests."""
    root = of(ctx)
    with root.postgres_errors():
        views.print_env_status(root.out, root.settings)
