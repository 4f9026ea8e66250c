"""The artifacts service's tables (its own schema; no other service reads them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from events import ArtifactRef


def artifact_lock(service: str, version: str) -> str:
    """The key of the lock (taken by the bus for each batch, until commit) that serialises
    everything done about one (service, version), keyed by schema too, so installations
    sharing a database do not wait on each other.

    A build and its evidence arrive on different topics and may be handled at once (other
    partitions, other instances): without it, evidence could be filed as pending just as the
    artifact's registration looks for pending evidence, and never be attached."""
    return f"artifact:{service}@{version}"


async def registered_digests(
    conn: asyncpg.Connection, refs: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(service, version) -> digest of those registered, in one round trip."""
    rows = await conn.fetch(
        "SELECT a.service, a.version, a.digest FROM artifacts a "
        "JOIN unnest($1::text[], $2::text[]) AS k(service, version) USING (service, version)",
        [s for s, _ in refs], [v for _, v in refs],
    )  # fmt: skip
    return {(r["service"], r["version"]): r["digest"] for r in rows}


async def insert_artifacts(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]]
) -> set[tuple[str, str]]:
    """Register (service, version, digest, commit, commit_source, purl, sbom_uri, event_id,
    trace_id)s in one statement; the (service, version) registered now."""
    columns = list(zip(*rows, strict=True))
    inserted = await conn.fetch(
        """INSERT INTO artifacts (service, version, digest, commit, commit_source, purl, sbom_uri,
                                  packaged_event_id, trace_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::text[], $9::text[])
           ON CONFLICT (service, version) DO NOTHING RETURNING service, version""",
        *(list(c) for c in columns),
    )
    return {(r["service"], r["version"]) for r in inserted}


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


async def insert_evidence_many(
    conn: asyncpg.Connection, rows: list[tuple[Any, ...]], received_at: datetime
) -> None:
    """``insert_evidence`` for many (source, id, service, version, digest, kind, passed,
    details, event_type, state, reason), in one statement."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        """INSERT INTO evidence (source, id, service, version, digest, kind, passed, details,
                                 event_type, state, reason, received_at, attached_at)
           SELECT e.source, e.id, e.service, e.version, e.digest, e.kind, e.passed,
                  e.details::jsonb, e.event_type, e.state, e.reason, $12,
                  CASE WHEN e.state = 'attached' THEN now() END
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::bool[], $8::text[], $9::text[], $10::text[],
                         $11::text[])
                  AS e(source, id, service, version, digest, kind, passed, details,
                       event_type, state, reason)
           ON CONFLICT (source, id) DO UPDATE
           SET state = EXCLUDED.state, reason = EXCLUDED.reason,
               attached_at = EXCLUDED.attached_at""",
        *(list(c) for c in columns[:8]),
        *(list(c) for c in columns[8:]),
        received_at,
    )


async def pending_evidence_of(
    conn: asyncpg.Connection, refs: list[tuple[str, str]]
) -> list[asyncpg.Record]:
    """The pending evidence of each (service, version), oldest first, locked, in one trip."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT e.source, e.id, e.service, e.version, e.digest, e.kind, e.passed, e.details, "
        "e.event_type FROM evidence e "
        "JOIN unnest($1::text[], $2::text[]) AS k(service, version) USING (service, version) "
        "WHERE e.state = 'pending' ORDER BY e.received_at, e.id FOR UPDATE OF e",
        [s for s, _ in refs], [v for _, v in refs],
    )  # fmt: skip
    return rows


async def settle_many(
    conn: asyncpg.Connection, settled: list[tuple[str, str, str, str | None]]
) -> None:
    """``settle_evidence`` for many (source, id, state, reason), in one statement."""
    await conn.execute(
        """UPDATE evidence SET state = s.state, reason = s.reason,
               attached_at = CASE WHEN s.state = 'attached' THEN now() END
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                  AS s(source, id, state, reason)
            WHERE evidence.source = s.source AND evidence.id = s.id""",
        [x[0] for x in settled], [x[1] for x in settled], [x[2] for x in settled],
        [x[3] for x in settled],
    )  # fmt: skip


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
