"""``lockstep schema``: the event contract as JSON Schema and AsyncAPI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.root import of

schema_app = typer.Typer(
    help="The event contract as JSON Schema and AsyncAPI.", no_args_is_help=True
)


@schema_app.command("export")
def schema_export(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Where to write the schemas")],
) -> None:
    """One JSON Schema per event type and an AsyncAPI 3.0 document of topics and messages."""
    from events.schema import export

    root = of(ctx)
    settings = root.settings
    written = export(
        directory,
        settings.namespace,
        bootstrap=settings.kafka_bootstrap,
        partitions=settings.topic_partitions,
    )
    root.out.print(f"wrote {len(written)} files to {directory}")
