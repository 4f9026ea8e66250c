"""``lockstep audit``: the tamper-evident audit trail (read through the audit service's public
face): check it, list who did what, export it.

Every problem is one line, never a traceback: Postgres away says how to bring it back."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.markup import escape
from rich.table import Column, Table

from cli.root import Root, of
from services.audit.api import (
    Entry,
    Head,
    NoTrail,
    Problem,
    open_audit,
    parse_head,
    read_lines,
    to_line,
    verify,
)
from shared.db import pg_where, short_reason

audit_app = typer.Typer(help="The audit trail: verify it, show who did what, export it.",
                        no_args_is_help=True)  # fmt: skip

T = TypeVar("T")
KEPT_HELP = "A head kept earlier (SEQ:HASH, or HASH) that must still be in the chain, unchanged"
HEAD_GONE = Problem(None, "deleted", "the head row is gone: where the chain ends is unknown")


def _fail(root: Root, message: str, code: int = 2) -> typer.Exit:
    return root.fail(escape(message), code=code, one_line=True)


def _on_postgres(root: Root, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the audit service's schema; Postgres away, or no trail, is one line."""
    settings = root.settings
    try:
        return asyncio.run(work)
    except NoTrail as exc:
        raise _fail(root, str(exc), code=1) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        where = pg_where(settings.pg_dsn)
        raise _fail(root, f"cannot reach Postgres at {where} ({short_reason(exc)}): start it "
                    "with `lockstep infra up`, or point LOCKSTEP_PG_DSN at a running one"
                    ) from None  # fmt: skip


async def _snapshot(root: Root) -> tuple[Head | None, list[Entry]]:
    async with open_audit(root.settings) as trail:
        return await trail.snapshot()


def _read_file(root: Root, path: Path) -> tuple[list[Entry], list[Problem]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(root, f"cannot read {path}: {exc.strerror or exc}") from None
    return read_lines(raw.splitlines())


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Option("--file", help="Check an export (JSON lines), not Postgres")
    ] = None,
    head: Annotated[str | None, typer.Option("--head", help=KEPT_HELP)] = None,
) -> None:
    """Recompute every hash of the chain; name each edited, deleted or reordered entry."""
    root = of(ctx)
    kept = None
    if head is not None:
        try:
            kept = parse_head(head)
        except ValueError as exc:
            raise _fail(root, str(exc)) from None
    if file is not None:
        entries, malformed = _read_file(root, file)
        report = verify(entries, kept=kept, also=malformed)
    else:
        stored_head, entries = _on_postgres(root, _snapshot(root))
        gone = [] if stored_head is not None else [HEAD_GONE]
        report = verify(entries, stored_head, kept=kept, also=gone)
    if not report.intact:
        for problem in report.problems:
            root.out.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    summary = report.summary()
    if file is not None and kept is None:
        summary += " (its end is not checked: give --head SEQ:HASH to catch a cut-short file)"
    root.out.print(summary, highlight=False, markup=False, soft_wrap=True)


@audit_app.command("show")
def audit_show(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option(help="Only this service")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment")] = None,
    limit: Annotated[int, typer.Option(min=1, help="The last this many entries")] = 200,
) -> None:
    """Who did what, when, citing the events (oldest first)."""
    root = of(ctx)

    async def read() -> list[Entry]:
        async with open_audit(root.settings) as trail:
            return await trail.entries(service, env, limit)

    found = _on_postgres(root, read())
    if not found:
        scope = " ".join(f"{k} {v}" for k, v in (("service", service), ("env", env)) if v)
        root.out.print(f"nothing audited{' for ' + scope if scope else ''}", highlight=False,
                       markup=False)  # fmt: skip
        return
    columns = [Column("seq", justify="right", no_wrap=True),
               Column("when (UTC)", no_wrap=True), Column("who", no_wrap=True),
               Column("action", no_wrap=True)]  # fmt: skip
    columns += [] if service else [Column("service")]
    columns += [] if env else [Column("env")]
    table = Table(*columns, Column("version"), Column("what", ratio=1, overflow="fold"),
                  Column("event", no_wrap=True))  # fmt: skip
    for e in found:
        row = [str(e.seq), f"{e.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}",
               e.actor if e.actor_kind == "person" else f"{e.actor} ({e.actor_kind})",
               e.action]  # fmt: skip
        row += [] if service else [e.service or ""]
        row += [] if env else [e.environment or ""]
        table.add_row(*(escape(c) for c in (*row, e.version or "", e.detail, e.event_id)))
    root.out.print(table)
    if len(found) == limit:
        root.out.print(f"the last {limit} entries (--limit for more)", highlight=False)


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here, not stdout")] = None,
) -> None:
    """The whole chain as JSON lines (what `audit verify --file` checks)."""
    root = of(ctx)
    stored_head, entries = _on_postgres(root, _snapshot(root))
    text = "".join(to_line(e) + "\n" for e in entries)
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(root, f"cannot write {out_file}: {exc.strerror or exc}") from None
    last = stored_head.hash if stored_head is not None else "unknown"
    root.out.print(f"{len(entries)} entries to {out_file}, head {last}", highlight=False,
                   markup=False, soft_wrap=True)  # fmt: skip
