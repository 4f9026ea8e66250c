"""``lockstep infra`` (local Kafka and Postgres, through ``infra/lockstep-infra``) and
``lockstep topics`` (a namespace's Kafka topics)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import typer

from cli.root import Root, of

infra_app = typer.Typer(
    help="Local Kafka and Postgres (infra/lockstep-infra).", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of a namespace.", no_args_is_help=True)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _infra(root: Root, command: str) -> None:
    script = REPO_ROOT / "infra" / "lockstep-infra"
    if not script.exists():
        raise root.fail(
            f"{script} not found: `lockstep infra` needs a checkout of the Lockstep repository"
        )
    # The script gets this process's environment (subprocess's default), LOCKSTEP_* included.
    raise typer.Exit(subprocess.call(["bash", str(script), command]))


def demo(ctx: typer.Context) -> None:
    """Run the demo (examples/demo.py, as scripts/demo does once the infrastructure is up)."""
    root = of(ctx)
    script = REPO_ROOT / "examples" / "demo.py"
    if not script.exists():
        raise root.fail(f"{script} not found: the demo is part of a checkout of Lockstep")
    # The demo gets this process's environment (subprocess's default), LOCKSTEP_* included.
    raise typer.Exit(subprocess.call([sys.executable, str(script)]))


@infra_app.command("up")
def infra_up(ctx: typer.Context) -> None:
    """Start Kafka (KRaft) and Postgres, create the topics, wait until both answer."""
    _infra(of(ctx), "up")


@infra_app.command("down")
def infra_down(ctx: typer.Context) -> None:
    """Stop what `up` started, and nothing else."""
    _infra(of(ctx), "down")


@infra_app.command("status")
def infra_status(ctx: typer.Context) -> None:
    """Is each part up?"""
    _infra(of(ctx), "status")


@topics_app.command("ensure")
def topics_ensure(ctx: typer.Context) -> None:
    """Create the namespace's topics that are missing."""
    from shared.bus.admin import ensure_topics

    root = of(ctx)
    settings = root.settings
    created = asyncio.run(ensure_topics(settings))
    root.out.print(
        f"{len(created)} topic(s) created in namespace {settings.namespace}: "
        f"{', '.join(created) or '-'}"
    )
