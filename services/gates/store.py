"""The gates service's tables (its own schema)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.gates.scoring import EvidenceFact


@dataclass(frozen=True)
class Build:
    service: str
    version: str
    digest: str
    purl: str
    traceparent: str | None = None  # of its registration: the build's trace


async def lock_build(conn: asyncpg.Connection, service: str, version: str) -> None:
    """Serialise, until commit, the judging of one build: its registration and its evidence
    arrive on two topics and may be handled at once."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':build:' || $1, 0))",
        f"{service}@{version}",
    )


async def add_build(conn: asyncpg.Connection, build: Build) -> None:
    await conn.execute(
        "INSERT INTO builds (service, version, digest, purl, traceparent) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        build.service, build.version, build.digest, build.purl, build.traceparent,
    )  # fmt: skip


async def build(conn: asyncpg.Connection, service: str, version: str) -> Build | None:
    row = await conn.fetchrow(
        "SELECT service, version, digest, purl, traceparent FROM builds "
        "WHERE service = $1 AND version = $2",
        service, version,
    )  # fmt: skip
    return Build(**dict(row)) if row is not None else None


async def recent_builds(conn: asyncpg.Connection, limit: int = 1000) -> list[Build]:
    rows = await conn.fetch(
        "SELECT service, version, digest, purl, traceparent FROM builds "
        "ORDER BY registered_at DESC LIMIT $1",
        limit,
    )
    return [Build(**dict(r)) for r in rows]


async def add_evidence(
    conn: asyncpg.Connection, event_id: str, service: str, version: str, fact: EvidenceFact,
    traceparent: str | None = None,
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO evidence (event_id, service, version, kind, passed, details, traceparent) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT DO NOTHING",
        event_id, service, version, fact.kind, fact.passed, json.dumps(fact.details), traceparent,
    )  # fmt: skip


async def evidence_traces(conn: asyncpg.Connection, service: str, version: str) -> list[str]:
    """The traceparents of the evidence recorded for a build (what its decisions link to)."""
    rows = await conn.fetch(
        "SELECT traceparent FROM evidence WHERE service = $1 AND version = $2 "
        "AND traceparent IS NOT NULL ORDER BY recorded_at, event_id",
        service, version,
    )  # fmt: skip
    return [r["traceparent"] for r in rows]


async def evidence(
    conn: asyncpg.Connection, service: str, version: str
) -> list[tuple[str, EvidenceFact]]:
    rows = await conn.fetch(
        "SELECT event_id, kind, passed, details FROM evidence WHERE service = $1 AND version = $2 "
        "ORDER BY recorded_at, event_id",
        service, version,
    )  # fmt: skip
    return [
        (r["event_id"], EvidenceFact(r["kind"], r["passed"], json.loads(r["details"])))
        for r in rows
    ]


async def decision(
    conn: asyncpg.Connection, service: str, version: str, environment: str
) -> tuple[str, str] | None:
    row = await conn.fetchrow(
        "SELECT result, policy_sha256 FROM decisions "
        "WHERE service = $1 AND version = $2 AND environment = $3",
        service, version, environment,
    )  # fmt: skip
    return (row["result"], row["policy_sha256"]) if row is not None else None


async def record_decision(
    conn: asyncpg.Connection, service: str, version: str, environment: str,
    result: str, score: float, policy_sha256: str,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO decisions (service, version, environment, result, score, policy_sha256)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (service, version, environment) DO UPDATE
           SET result = EXCLUDED.result, score = EXCLUDED.score,
               policy_sha256 = EXCLUDED.policy_sha256, decided_at = now()""",
        service, version, environment, result, score, policy_sha256,
    )  # fmt: skip


async def record_deployment(
    conn: asyncpg.Connection, environment: str, service: str, version: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO deployments (environment, service, version, deployed_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        environment, service, version, at,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO running (environment, service, version) VALUES ($1, $2, $3) "
        "ON CONFLICT (environment, service) DO UPDATE SET version = EXCLUDED.version",
        environment, service, version,
    )  # fmt: skip


async def deployed_at(conn: asyncpg.Connection, service: str, version: str) -> dict[str, datetime]:
    rows = await conn.fetch(
        "SELECT environment, deployed_at FROM deployments WHERE service = $1 AND version = $2",
        service, version,
    )  # fmt: skip
    return {r["environment"]: r["deployed_at"] for r in rows}


async def running_version(conn: asyncpg.Connection, environment: str, service: str) -> str | None:
    version: str | None = await conn.fetchval(
        "SELECT version FROM running WHERE environment = $1 AND service = $2", environment, service
    )
    return version


async def record_approval(
    conn: asyncpg.Connection, service: str, version: str, environment: str, responder: str,
    decision: str,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO approvals (service, version, environment, responder, decision)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (service, version, environment, responder) DO UPDATE
           SET decision = EXCLUDED.decision, decided_at = now()""",
        service, version, environment, responder, decision,
    )  # fmt: skip


async def approvals(
    conn: asyncpg.Connection, service: str, version: str, environment: str
) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT responder, decision FROM approvals "
        "WHERE service = $1 AND version = $2 AND environment = $3",
        service, version, environment,
    )  # fmt: skip
    return {r["responder"]: r["decision"] for r in rows}


async def soak_until(
    conn: asyncpg.Connection, service: str, version: str, due_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO soaking (service, version, due_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (service, version) DO UPDATE "
        "SET due_at = LEAST(soaking.due_at, EXCLUDED.due_at)",
        service, version, due_at,
    )  # fmt: skip


async def soaked(conn: asyncpg.Connection, now: datetime) -> list[Build]:
    """Builds whose soak has ended; they leave the list."""
    rows = await conn.fetch(
        "DELETE FROM soaking WHERE due_at <= $1 RETURNING service, version", now
    )
    found = []
    for r in rows:
        b = await build(conn, r["service"], r["version"])
        if b is not None:
            found.append(b)
    return found
