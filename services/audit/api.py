"""The audit service's public face: the trail read back, checked and exported. Read-only:
the trail grows only through events, which the running service chains.

    async with open_audit(settings) as trail:
        head, entries = await trail.snapshot()
    report = verify(entries, head)
    print(report.summary() if report.intact else "\\n".join(map(str, report.problems)))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg

from services.audit import store
from services.audit.chain import (
    GENESIS,
    Entry,
    Head,
    Malformed,
    Problem,
    Report,
    from_line,
    parse_head,
    to_line,
    verify,
)
from shared.db import read_only_connection
from shared.settings import Settings

SERVICE = "audit"

__all__ = [
    "GENESIS",
    "AuditTrail",
    "Entry",
    "Head",
    "Malformed",
    "NoTrail",
    "Problem",
    "Report",
    "open_audit",
    "parse_head",
    "read_lines",
    "to_line",
    "verify",
]


class NoTrail(LookupError):
    """The namespace has no audit trail: the service never ran there (or its tables are gone)."""


class AuditTrail:
    """The chain, on one read-only connection to the service's own schema."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self._conn = conn
        self._schema = schema

    def _missing(self) -> NoTrail:
        return NoTrail(
            f"no audit trail in schema {self._schema}: the audit service has never run here "
            "(`lockstep run audit`, or `lockstep run all`), or its tables were dropped"
        )

    async def snapshot(self) -> tuple[Head | None, list[Entry]]:
        """The head row and every entry, read in one snapshot (appends going on meanwhile
        are either wholly in it or not at all)."""
        try:
            async with self._conn.transaction(isolation="repeatable_read", readonly=True):
                return await store.head(self._conn), await store.entries(self._conn)
        except asyncpg.UndefinedTableError:
            raise self._missing() from None

    async def entries(
        self, service: str | None = None, environment: str | None = None, limit: int | None = None
    ) -> list[Entry]:
        """Entries in the chain's order, of a service (and an environment), the last
        ``limit`` of them."""
        try:
            return await store.entries(
                self._conn, service=service, environment=environment, limit=limit
            )
        except asyncpg.UndefinedTableError:
            raise self._missing() from None


@asynccontextmanager
async def open_audit(settings: Settings) -> AsyncIterator[AuditTrail]:
    """The trail's read side. Applies no migrations and creates nothing."""
    async with read_only_connection(settings, SERVICE) as conn:
        yield AuditTrail(conn, settings.db_schema(SERVICE))


def read_lines(lines: Iterable[str | bytes]) -> tuple[list[Entry], list[Problem]]:
    """An export's entries, and a problem for each line that is no entry (blank lines are
    skipped; bytes are read as UTF-8)."""
    found: list[Entry] = []
    problems: list[Problem] = []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
        except UnicodeDecodeError:
            problems.append(Problem(None, "malformed", f"line {number}: not UTF-8"))
            continue
        if not text.strip():
            continue
        try:
            found.append(from_line(text))
        except Malformed as exc:
            problems.append(Problem(None, "malformed", f"line {number}: {exc}"))
    return found, problems
