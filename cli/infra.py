"""``lockstep infra`` (local Kafka and Postgres, through ``infra/lockstep-infra``) and
``lockstep topics`` (a namespace's Kafka topics)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from cli.root import Root, of

infra_app = typer.Typer(
    help="Local Kafka and Postgres (infra/lockstep-infra).", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of a namespace.", no_args_is_help=True)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _infra(root: Root, command: str, *args: str) -> None:
    script = REPO_ROOT / "infra" / "lockstep-infra"
    if not script.exists():
        raise root.fail(
            f"{script} not found: `lockstep infra` needs a checkout of the Lockstep repository"
        )
    # The script gets this process's environment (subprocess's default), LOCKSTEP_* included.
    raise typer.Exit(subprocess.call(["bash", str(script), command, *args]))


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


principal_app = typer.Typer(help="Kafka users (SCRAM) and their rights.", no_args_is_help=True)
infra_app.add_typer(principal_app, name="principal")


@principal_app.command("add")
def principal_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new user, e.g. ci-jenkins or deployer-eu")],
    as_: Annotated[
        str, typer.Option("--as", help="The principal of infra/access.toml whose rights it gets")
    ],
) -> None:
    """Add a Kafka user with a principal's rights (a CI system, a deployer agent): its SCRAM
    credential on the local broker, its ACLs, its password in the credentials file."""
    _infra(of(ctx), "principal", "add", name, "--as", as_)


@principal_app.command("remove")
def principal_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A user made by `principal add`")],
) -> None:
    """Delete a user made by `principal add` (its SCRAM credential and password)."""
    _infra(of(ctx), "principal", "remove", name)


@topics_app.command("ensure")
def topics_ensure(ctx: typer.Context) -> None:
    """Create the namespace's topics that are missing, and their ACLs (infra/access.toml)."""
    from aiokafka.errors import KafkaError

    from shared.bus.access import AccessFileError
    from shared.bus.admin import ensure_topics
    from shared.bus.kafka_client import KafkaLoginRefused
    from shared.bus.producer import quiet_bootstrap

    root = of(ctx)
    settings = root.settings
    try:
        with quiet_bootstrap():
            created = asyncio.run(ensure_topics(settings))
    except (AccessFileError, KafkaLoginRefused) as exc:  # each says what to do
        raise root.fail(str(exc), one_line=True) from None
    except (KafkaError, OSError) as exc:
        raise root.fail(f"Kafka at {settings.kafka_bootstrap}: {exc}", one_line=True) from None
    root.out.print(
        f"{len(created)} topic(s) created in namespace {settings.namespace}: "
        f"{', '.join(created) or '-'}"
    )
