"""``lockstep tail`` (events as they happen) and ``lockstep trace`` (a release's span tree
from the local span store)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli import views
from cli.publish import Label
from cli.root import of


def tail(
    ctx: typer.Context,
    topics: Annotated[
        list[str] | None, typer.Argument(help="Logical topics (default: all)")
    ] = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after this many records")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many idle seconds")] = None,
) -> None:
    """Follow events as they happen, one readable line each."""
    root = of(ctx)
    asyncio.run(views.tail(root.out, root.settings, topics or [], from_beginning, count, idle))


def trace(
    ctx: typer.Context,
    artifact: Label,
    wait: Annotated[float, typer.Option(help="Seconds to wait for spans to appear")] = 0.0,
) -> None:
    """The span tree of a release so far (from the local span store)."""
    root = of(ctx)
    ref = root.parse_label(artifact)
    trace_dir = root.settings.trace_dir
    if trace_dir is None:
        raise root.fail(
            "no local span store: LOCKSTEP_TRACE_DIR is empty, so no spans are kept here "
            "(set it, e.g. to .lockstep/traces; with an OTLP collector, look there)",
            code=1,
            one_line=True,
        )
    if not views.print_trace(root.out, root.settings, ref.label, wait):
        raise root.fail(
            f"no spans about {ref.label} in {trace_dir} (with an OTLP collector, look "
            "there; spans reach the local store about a second after they end)",
            code=1,
        )
