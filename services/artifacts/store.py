"""The artifacts service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from events import ArtifactRef


async def lock_artifact(conn: asyncpg.Connection, service: str, version: str) -> None:
    """Serialise, until commit, everything done about one (service, version).

    A build and its evidence arrive on different topics and may be handled at once (other
    partitions, other instances): without this, evidence could be filed as pending just as
    the artifact's registration looks for pending evidence, and never be attached."""
    await conn.execute(  # keyed by schema too: installations sharing a database do not wait
        "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':artifact:' || $1, 0))",
        f"{service}@{version}",
    )


async def registered_digest(conn: asyncpg.Connection, service: str, version: str) -> str | None:
    digest: str | None = await conn.fetchval(
        "SELECT digest FROM artifacts WHERE service = $1 AND version = $2", service, version
    )
    return digest


async def insert_artifact(
    conn: asyncpg.Connection,
    *,
    ref: ArtifactRef,
    commit: str,
    commit_source: str | None,
    purl: str,
    sbom_uri: str | None,
    event_id: str,
    trace_id: str | None,
) -> bool:
    """False if (service, version) was registered meanwhile (by another instance)."""
    row = await conn.fetchval(
        """INSERT INTO artifacts (service, version, digest, commit, commit_source, purl, sbom_uri,
                                  packaged_event_id, trace_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (service, version) DO NOTHING RETURNING 1""",
        ref.service,
        ref.version,
        ref.digest,
        commit,
        commit_source,
        purl,
        sbom_uri,
        event_id,
        trace_id,
    )
    return row is not None


async def insert_rejection(
    conn: asyncpg.Connection,
    *,
    purl: str,
    ref: ArtifactRef | None,
    digest: str | None,
    code: str,
    reason: str,
    event_id: str,
) -> None:
    await conn.execute(
        "INSERT INTO rejections (purl, service, version, digest, code, reason, event_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        purl,
        ref.service if ref else None,
        ref.version if ref else None,
        digest,
        code,
        reason,
        event_id,
    )


async def insert_evidence(
    conn: asyncpg.Connection,
    *,
    source: str,
    event_id: str,
    ref: ArtifactRef,
    kind: str,
    passed: bool,
    details: dict[str, Any],
    event_type: str,
    state: str,
    received_at: datetime,
    reason: str | None = None,
) -> None:
    """``received_at``: the service clock's now (what the pending wait is measured from)."""
    await conn.execute(
        """INSERT INTO evidence (source, id, service, version, digest, kind, passed, details,
                                 event_type, state, reason, received_at, attached_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12,
                   CASE WHEN $10 = 'attached' THEN now() END)
           ON CONFLICT (source, id) DO NOTHING""",
        source,
        event_id,
        ref.service,
        ref.version,
        ref.digest,
        kind,
        passed,
        json.dumps(details),
        event_type,
        state,
        reason,
        received_at,
    )


async def expire_pending(
    conn: asyncpg.Connection, received_before: datetime, why: str, limit: int = 500
) -> list[asyncpg.Record]:
    """Mark pending evidence received before ``received_before`` expired, its reason
    ``<service>@<version><why>`` (the oldest first, at most ``limit``; rows a registration is
    attaching right now are skipped), and return it."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """UPDATE evidence e SET state = 'expired', reason = e.service || '@' || e.version || $2
           FROM (SELECT source, id FROM evidence
                 WHERE state = 'pending' AND received_at < $1
                 ORDER BY received_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) due
           WHERE e.source = due.source AND e.id = due.id
           RETURNING e.source, e.id, e.service, e.version, e.digest, e.reason, e.received_at""",
        received_before,
        why,
        limit,
    )
    return sorted(rows, key=lambda r: (r["received_at"], r["id"]))


async def pending_evidence(
    conn: asyncpg.Connection, service: str, version: str
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT source, id, digest, kind, passed, details, event_type FROM evidence "
        "WHERE service = $1 AND version = $2 AND state = 'pending' "
        "ORDER BY received_at, id FOR UPDATE",
        service,
        version,
    )
    return rows


async def settle_evidence(
    conn: asyncpg.Connection, source: str, event_id: str, state: str, reason: str | None = None
) -> None:
    await conn.execute(
        "UPDATE evidence SET state = $3, reason = $4, "
        "attached_at = CASE WHEN $3 = 'attached' THEN now() END WHERE source = $1 AND id = $2",
        source,
        event_id,
        state,
        reason,
    )
