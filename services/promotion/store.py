"""The promotion service's tables (its own schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Candidate:
    service: str
    version: str
    environment: str
    digest: str
    purl: str
    state: str
    holds: list[dict[str, Any]]
    traceparent: str | None
    created_at: datetime

    @property
    def label(self) -> str:
        return f"{self.service}@{self.version}"


@dataclass(frozen=True)
class Running:
    version: str
    digest: str
    deployed_at: datetime


async def lock_environment(conn: asyncpg.Connection, environment: str) -> None:
    """Decisions about one environment are made one at a time (trains and dependencies
    look across services)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':env:' || $1, 0))",
        environment,
    )


async def upsert_candidate(
    conn: asyncpg.Connection, *, service: str, version: str, environment: str, digest: str,
    purl: str, state: str, traceparent: str | None, at: datetime,
) -> None:  # fmt: skip
    """A gate decision arrived; an approved candidate stays approved."""
    await conn.execute(
        """INSERT INTO candidates (service, version, environment, digest, purl, state, traceparent,
                                   created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (service, version, environment) DO UPDATE
           SET state = EXCLUDED.state, traceparent = EXCLUDED.traceparent
           WHERE candidates.state NOT IN ('approved', 'superseded')""",
        service, version, environment, digest, purl, state, traceparent, at,
    )  # fmt: skip


def _candidate(row: asyncpg.Record) -> Candidate:
    return Candidate(
        service=row["service"], version=row["version"], environment=row["environment"],
        digest=row["digest"], purl=row["purl"], state=row["state"],
        holds=json.loads(row["holds"]), traceparent=row["traceparent"],
        created_at=row["created_at"],
    )  # fmt: skip


async def candidates(
    conn: asyncpg.Connection, service: str, environment: str, states: tuple[str, ...]
) -> list[Candidate]:
    rows = await conn.fetch(
        "SELECT * FROM candidates WHERE service = $1 AND environment = $2 AND state = ANY($3)",
        service, environment, list(states),
    )  # fmt: skip
    return [_candidate(r) for r in rows]


async def waiting_pairs(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT DISTINCT service, environment FROM candidates WHERE state = 'waiting'"
    )
    return [(r["service"], r["environment"]) for r in rows]


async def due(conn: asyncpg.Connection, now: datetime) -> list[Candidate]:
    rows = await conn.fetch(
        "SELECT * FROM candidates WHERE state = 'waiting' AND next_check <= $1 ORDER BY next_check",
        now,
    )
    return [_candidate(r) for r in rows]


async def set_state(conn: asyncpg.Connection, c: Candidate, state: str) -> None:
    await conn.execute(
        "UPDATE candidates SET state = $4 WHERE service = $1 AND version = $2 AND environment = $3",
        c.service, c.version, c.environment, state,
    )  # fmt: skip


async def set_holds(
    conn: asyncpg.Connection, c: Candidate, holds: list[dict[str, Any]], next_check: datetime | None
) -> None:
    await conn.execute(
        "UPDATE candidates SET holds = $4::jsonb, next_check = $5 "
        "WHERE service = $1 AND version = $2 AND environment = $3",
        c.service, c.version, c.environment, json.dumps(holds), next_check,
    )  # fmt: skip


async def running(conn: asyncpg.Connection, environment: str) -> dict[str, Running]:
    rows = await conn.fetch(
        "SELECT service, version, digest, deployed_at FROM ledger WHERE environment = $1",
        environment,
    )
    return {r["service"]: Running(r["version"], r["digest"], r["deployed_at"]) for r in rows}


async def where_runs(conn: asyncpg.Connection, service: str, version: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT environment FROM ledger WHERE service = $1 AND version = $2", service, version
    )
    return {r["environment"] for r in rows}


async def record_deployment(
    conn: asyncpg.Connection, *, environment: str, service: str, version: str, digest: str,
    promotion_id: str, at: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO ledger (environment, service, version, digest, promotion_id, deployed_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (environment, service) DO UPDATE
           SET version = EXCLUDED.version, digest = EXCLUDED.digest,
               promotion_id = EXCLUDED.promotion_id, deployed_at = EXCLUDED.deployed_at""",
        environment, service, version, digest, promotion_id, at,
    )  # fmt: skip
    await conn.execute(
        "UPDATE promotions SET state = 'deployed', settled_at = $2 WHERE promotion_id = $1",
        promotion_id, at,
    )  # fmt: skip


async def record_failure(
    conn: asyncpg.Connection, promotion_id: str, reason: str, at: datetime
) -> None:
    await conn.execute(
        "UPDATE promotions SET state = 'failed', reason = $2, settled_at = $3 "
        "WHERE promotion_id = $1",
        promotion_id, reason, at,
    )  # fmt: skip


async def add_promotion(
    conn: asyncpg.Connection, *, promotion_id: str, c: Candidate, train: str | None, at: datetime
) -> bool:
    """False if this promotion was already made (a redelivery, a second look)."""
    made = await conn.fetchval(
        """INSERT INTO promotions (promotion_id, service, version, environment, digest, train,
                                  state, approved_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'approved', $7)
           ON CONFLICT DO NOTHING RETURNING 1""",
        promotion_id, c.service, c.version, c.environment, c.digest, train, at,
    )  # fmt: skip
    return made is not None


async def matrix(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT environment, service, version, digest, deployed_at FROM ledger "
        "ORDER BY service, environment"
    )
    return rows


async def record_history(
    conn: asyncpg.Connection, *, environment: str, service: str, version: str, digest: str,
    promotion_id: str, rollback: bool, at: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO deployment_history (environment, service, version, digest, promotion_id,
                                           rollback, deployed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        environment, service, version, digest, promotion_id, rollback, at,
    )  # fmt: skip


async def last_good(
    conn: asyncpg.Connection, environment: str, service: str, bad_version: str
) -> Running | None:
    """The newest deployment of ``service`` here that is neither ``bad_version`` nor marked bad."""
    row = await conn.fetchrow(
        """SELECT version, digest, deployed_at FROM deployment_history h
           WHERE environment = $1 AND service = $2 AND version <> $3
             AND NOT EXISTS (SELECT 1 FROM bad_versions b
                             WHERE b.service = h.service AND b.version = h.version)
           ORDER BY deployed_at DESC, id DESC LIMIT 1""",
        environment, service, bad_version,
    )  # fmt: skip
    if row is None:
        return None
    return Running(version=row["version"], digest=row["digest"], deployed_at=row["deployed_at"])


async def purl_of(conn: asyncpg.Connection, service: str, version: str) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT purl FROM candidates WHERE service = $1 AND version = $2 LIMIT 1", service, version
    )
    return found


async def mark_bad(
    conn: asyncpg.Connection, *, service: str, version: str, environment: str, incident_id: str,
    reason: str, at: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO bad_versions (service, version, environment, incident_id, reason, marked_at)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
        service, version, environment, incident_id, reason, at,
    )  # fmt: skip


async def unmark_bad(conn: asyncpg.Connection, service: str, version: str) -> bool:
    status: str = await conn.execute(
        "DELETE FROM bad_versions WHERE service = $1 AND version = $2", service, version
    )
    return status != "DELETE 0"


async def hold_for_incident(
    conn: asyncpg.Connection, *, service: str, environment: str, incident_id: str, reason: str,
    at: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO incident_holds (service, environment, incident_id, reason, since)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        service, environment, incident_id, reason, at,
    )  # fmt: skip


async def rollback_holds(
    conn: asyncpg.Connection, service: str, version: str, environment: str
) -> list[tuple[str, str]]:
    """(kind, reason) of what a rollback left holding this build here, in one round trip:
    an open incident on the service in the environment, and the version marked bad."""
    rows = await conn.fetch(
        """SELECT 'incident' AS kind, 'incident ' || incident_id || ': ' || reason AS reason,
                  since AS at
             FROM incident_holds WHERE service = $1 AND environment = $3
           UNION ALL
           SELECT 'bad-version', 'rolled back in ' || environment || ' (' || incident_id
                  || ': ' || reason || ')', marked_at
             FROM bad_versions WHERE service = $1 AND version = $2
           ORDER BY at, kind DESC""",
        service, version, environment,
    )  # fmt: skip
    return [(r["kind"], r["reason"]) for r in rows]


async def release_incident_holds(
    conn: asyncpg.Connection, *, incident_id: str | None = None,
    service: str | None = None, environment: str | None = None,
) -> list[tuple[str, str]]:  # fmt: skip
    """Remove holds by incident, or by service and environment; the (service, environment)s
    that were held."""
    rows = await conn.fetch(
        """DELETE FROM incident_holds
           WHERE ($1::text IS NULL OR incident_id = $1)
             AND ($2::text IS NULL OR service = $2)
             AND ($3::text IS NULL OR environment = $3)
           RETURNING service, environment""",
        incident_id, service, environment,
    )  # fmt: skip
    return sorted({(r["service"], r["environment"]) for r in rows})


async def add_rollback_promotion(
    conn: asyncpg.Connection, *, promotion_id: str, service: str, version: str, environment: str,
    digest: str, incident_id: str, at: datetime,
) -> bool:  # fmt: skip
    made = await conn.fetchval(
        """INSERT INTO promotions (promotion_id, service, version, environment, digest,
                                  state, approved_at, rollback_of)
           VALUES ($1, $2, $3, $4, $5, 'approved', $6, $7)
           ON CONFLICT DO NOTHING RETURNING 1""",
        promotion_id, service, version, environment, digest, at, incident_id,
    )  # fmt: skip
    return made is not None
