"""Read side of the registry, for the command line (and later the console)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class EvidenceView:
    kind: str
    passed: bool
    state: str
    details: dict[str, Any]
    reason: str | None
    received_at: datetime


@dataclass(frozen=True)
class ArtifactView:
    service: str
    version: str
    digest: str | None
    commit: str | None
    status: str  # registered | pending (evidence only) | expired (all of it) | rejected
    registered_at: datetime | None
    trace_id: str | None
    evidence: list[EvidenceView] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ArtifactSummary:
    service: str
    version: str
    digest: str
    commit: str
    registered_at: datetime
    evidence: int
    failing: int


async def list_artifacts(
    conn: asyncpg.Connection, service: str | None = None, limit: int = 50
) -> list[ArtifactSummary]:
    rows = await conn.fetch(
        """SELECT a.service, a.version, a.digest, a.commit, a.registered_at,
                  count(e.*) FILTER (WHERE e.state = 'attached') AS evidence,
                  count(e.*) FILTER (WHERE e.state = 'attached' AND NOT e.passed) AS failing
           FROM artifacts a LEFT JOIN evidence e USING (service, version)
           WHERE $1::text IS NULL OR a.service = $1
           GROUP BY a.service, a.version ORDER BY a.registered_at DESC LIMIT $2""",
        service,
        limit,
    )
    return [
        ArtifactSummary(
            service=r["service"],
            version=r["version"],
            digest=r["digest"],
            commit=r["commit"],
            registered_at=r["registered_at"],
            evidence=r["evidence"],
            failing=r["failing"],
        )
        for r in rows
    ]


async def show_artifact(
    conn: asyncpg.Connection, service: str, version: str
) -> ArtifactView | None:
    art = await conn.fetchrow(
        "SELECT * FROM artifacts WHERE service = $1 AND version = $2", service, version
    )
    ev_rows = await conn.fetch(
        "SELECT kind, passed, state, details, reason, received_at FROM evidence "
        "WHERE service = $1 AND version = $2 ORDER BY received_at",
        service,
        version,
    )
    rej_rows = await conn.fetch(
        "SELECT digest, code, reason, rejected_at FROM rejections "
        "WHERE service = $1 AND version = $2 "
        "ORDER BY rejected_at",
        service,
        version,
    )
    if art is None and not ev_rows and not rej_rows:
        return None
    evidence = [
        EvidenceView(
            kind=r["kind"],
            passed=r["passed"],
            state=r["state"],
            details=json.loads(r["details"]) if isinstance(r["details"], str) else r["details"],
            reason=r["reason"],
            received_at=r["received_at"],
        )
        for r in ev_rows
    ]
    if art is not None:
        status = "registered"
    elif rej_rows:
        status = "rejected"
    elif evidence and all(e.state == "expired" for e in evidence):
        status = "expired"  # its evidence waited for it, and it never came
    else:
        status = "pending"
    return ArtifactView(
        service=service,
        version=version,
        digest=art["digest"] if art else None,
        commit=art["commit"] if art else None,
        status=status,
        registered_at=art["registered_at"] if art else None,
        trace_id=art["trace_id"] if art else None,
        evidence=evidence,
        rejections=[dict(r) for r in rej_rows],
    )


@dataclass(frozen=True)
class Commit:
    commit: str
    repo: str | None  # where the commit lives (the build's commit_source), if CI said


async def commit_of(conn: asyncpg.Connection, service: str, version: str) -> Commit | None:
    """The commit a registered build came from (None: no such build)."""
    row = await conn.fetchrow(
        "SELECT commit, commit_source FROM artifacts WHERE service = $1 AND version = $2",
        service,
        version,
    )
    return None if row is None else Commit(commit=row["commit"], repo=row["commit_source"])
