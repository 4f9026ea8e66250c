"""The audit service's queries: the chain's head, appending, and reading the chain back."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.audit.chain import FIELDS, Entry, Fact, Head, append
from services.audit.facts import Place

_COLUMNS = ", ".join((*FIELDS, "hash"))
# the entry, and the head moved onto it: one statement ($1, $2: the new head's seq and hash)
_APPEND = (
    "WITH moved AS (UPDATE head SET seq = $1, hash = $2 WHERE one) "
    f"INSERT INTO entries ({_COLUMNS}) VALUES "
    f"({', '.join(f'${i}' for i in range(3, len(FIELDS) + 4))})"
)


async def append_fact(conn: asyncpg.Connection, fact: Fact, recorded_at: datetime) -> Entry:
    """Append ``fact`` after the head, in ``conn``'s transaction. The head row is locked
    first (``FOR UPDATE``): a concurrent transaction appending waits here until this one
    commits or rolls back, and then reads the head this one left, so the chain is one line in
    commit order."""
    row = await conn.fetchrow("SELECT seq, hash FROM head WHERE one FOR UPDATE")
    if row is None:
        raise RuntimeError("the audit head row is missing: the chain cannot be appended to")
    entry = append(Head(row["seq"], row["hash"]), fact, recorded_at)
    await conn.execute(
        _APPEND, entry.seq, entry.hash, *(getattr(entry, name) for name in (*FIELDS, "hash"))
    )
    return entry


async def remember_incident(conn: asyncpg.Connection, incident_id: str, place: Place) -> None:
    """Where an incident is (kept from its detection; a later word fills what was missing)."""
    await conn.execute(
        """INSERT INTO incidents (incident_id, service, environment, version)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (incident_id) DO UPDATE SET
               service = coalesce(incidents.service, EXCLUDED.service),
               environment = coalesce(incidents.environment, EXCLUDED.environment),
               version = coalesce(incidents.version, EXCLUDED.version)""",
        incident_id, place.service, place.environment, place.version,
    )  # fmt: skip


async def remember_request(conn: asyncpg.Connection, request_id: str, incident_id: str) -> None:
    """A flag change asked for on an incident's behalf (its flag.changed names the request)."""
    await conn.execute(
        "INSERT INTO requests (request_id, incident_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        request_id, incident_id,
    )  # fmt: skip


async def request_incident(conn: asyncpg.Connection, request_id: str) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT incident_id FROM requests WHERE request_id = $1", request_id
    )
    return found


async def incident_place(conn: asyncpg.Connection, incident_id: str) -> Place | None:
    row = await conn.fetchrow(
        "SELECT service, environment, version FROM incidents WHERE incident_id = $1", incident_id
    )
    return Place(row["service"], row["environment"], row["version"]) if row else None


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(**{name: row[name] for name in (*FIELDS, "hash")})


async def head(conn: asyncpg.Connection) -> Head | None:
    """The head row (None: no head row at all)."""
    row = await conn.fetchrow("SELECT seq, hash FROM head WHERE one")
    return Head(row["seq"], row["hash"]) if row else None


async def entries(
    conn: asyncpg.Connection,
    *,
    service: str | None = None,
    environment: str | None = None,
    limit: int | None = None,
) -> list[Entry]:
    """Entries in the chain's order (of a service, and of an environment, if given: an entry
    without one is of its incident's); with a ``limit``, the last ``limit`` of them."""
    # of a service (or an environment) directly, or through the incident it is part of
    query = (
        f"SELECT {_COLUMNS} FROM entries WHERE "
        "($1::text IS NULL OR service = $1 OR (service IS NULL AND incident IN "
        "    (SELECT incident_id FROM incidents WHERE service = $1))) AND "
        "($2::text IS NULL OR environment = $2 OR (environment IS NULL AND incident IN "
        "    (SELECT incident_id FROM incidents WHERE environment = $2)))"
    )
    if limit is None:
        rows = await conn.fetch(f"{query} ORDER BY seq", service, environment)
    else:
        rows = await conn.fetch(
            f"SELECT * FROM ({query} ORDER BY seq DESC LIMIT $3) last ORDER BY seq",
            service, environment, limit,
        )  # fmt: skip
    return [_entry(r) for r in rows]
