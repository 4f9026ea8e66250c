"""The inbox: one row per event a service has dealt with, in the handler's transaction, with a
digest of what it was, so that another event under the same id is told from a redelivery."""

from __future__ import annotations

import asyncpg

# (source, id, type, outcome, digest): a digest of None is "unknown" (rows older than the
# digest column, or a record known only by its position).
InboxKey = tuple[str, str, str | None, str, str | None]

_CLAIM = (
    "INSERT INTO inbox (source, id, event_type, outcome, digest) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


async def claim(
    conn: asyncpg.Connection,
    source: str,
    event_id: str,
    event_type: str | None,
    outcome: str,
    digest: str | None = None,
) -> bool:
    """Record the event as dealt with; False if it already was (a redelivery: skip it)."""
    return await conn.fetchval(_CLAIM, source, event_id, event_type, outcome, digest) is not None


async def claim_many(conn: asyncpg.Connection, keys: list[InboxKey]) -> set[tuple[str, str]]:
    """Record a batch of (source, id, type, outcome, digest) in one statement; returns the
    (source, id) pairs that were new. The others were dealt with before: redeliveries, or
    conflicting duplicates (``digests_of`` tells which)."""
    rows = await conn.fetch(
        "INSERT INTO inbox (source, id, event_type, outcome, digest) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) "
        "ON CONFLICT DO NOTHING RETURNING source, id",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [k[4] for k in keys],
    )
    return {(r["source"], r["id"]) for r in rows}


async def digests_of(
    conn: asyncpg.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str | None, str]]:
    """(source, id) -> (digest, outcome) of events already in the inbox."""
    rows = await conn.fetch(
        "SELECT i.source, i.id, i.digest, i.outcome FROM inbox i "
        "JOIN unnest($1::text[], $2::text[]) AS k(source, id) USING (source, id)",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["source"], r["id"]): (r["digest"], r["outcome"]) for r in rows}


async def set_outcome(conn: asyncpg.Connection, source: str, event_id: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE inbox SET outcome = $3 WHERE source = $1 AND id = $2", source, event_id, outcome
    )
