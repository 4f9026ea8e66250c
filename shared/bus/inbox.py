"""The inbox: one row per event a service has dealt with, in the handler's transaction."""

from __future__ import annotations

import asyncpg

_CLAIM = (
    "INSERT INTO inbox (source, id, event_type, outcome) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


async def claim(
    conn: asyncpg.Connection, source: str, event_id: str, event_type: str | None, outcome: str
) -> bool:
    """Record the event as dealt with; False if it already was (a redelivery: skip it)."""
    return await conn.fetchval(_CLAIM, source, event_id, event_type, outcome) is not None


async def claim_many(
    conn: asyncpg.Connection, keys: list[tuple[str, str, str | None, str]]
) -> set[tuple[str, str]]:
    """Record a batch of (source, id, type, outcome) in one statement; returns the (source, id)
    pairs that were new. The others were dealt with before: redeliveries, to be skipped."""
    rows = await conn.fetch(
        "INSERT INTO inbox (source, id, event_type, outcome) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) "
        "ON CONFLICT DO NOTHING RETURNING source, id",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
    )
    return {(r["source"], r["id"]) for r in rows}


async def set_outcome(conn: asyncpg.Connection, source: str, event_id: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE inbox SET outcome = $3 WHERE source = $1 AND id = $2", source, event_id, outcome
    )
