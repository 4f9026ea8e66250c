"""The gates service's tables (its own schema). ``snapshot`` reads, in one round trip,
everything a decision about a build needs (``decide.judge``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from policy.in_force import HOLD_MODEL
from services.gates.decide import Build, BuildSnapshot, Decision
from services.gates.scoring import EvidenceFact


def build_lock(service: str, version: str) -> str:
    """The key of a build's lock, as the bus takes it for a batch (``Router.handles(...,
    locks=)``) and ``lock_build`` by hand."""
    return f"build:{service}@{version}"


async def lock_build(conn: asyncpg.Connection, service: str, version: str) -> None:
    """Serialise, until commit, the judging of one build: its registration and its evidence
    arrive on two topics and may be handled at once."""
    await conn.execute(
        f"SELECT {HOLD_MODEL}, "
        f"pg_advisory_xact_lock(hashtextextended(current_schema() || ':build:' || $1, 0))",
        f"{service}@{version}",
    )


async def add_build(conn: asyncpg.Connection, build: Build) -> bool:
    """False if the build was registered already."""
    added = await conn.fetchval(
        "INSERT INTO builds (service, version, digest, purl, author) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        build.service, build.version, build.digest, build.purl, build.author,
    )  # fmt: skip
    return added is not None


async def add_builds(conn: asyncpg.Connection, builds: Sequence[Build]) -> set[tuple[str, str]]:
    """Register builds (one statement); the (service, version) registered now."""
    rows = await conn.fetch(
        "INSERT INTO builds (service, version, digest, purl, author) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) "
        "ON CONFLICT DO NOTHING RETURNING service, version",
        [b.service for b in builds], [b.version for b in builds], [b.digest for b in builds],
        [b.purl for b in builds], [b.author for b in builds],
    )  # fmt: skip
    return {(r["service"], r["version"]) for r in rows}


async def add_evidence_many(
    conn: asyncpg.Connection, facts: Sequence[tuple[str, str, str, EvidenceFact]]
) -> set[str]:
    """Record (event id, service, version, fact)s (one statement); the event ids new now."""
    rows = await conn.fetch(
        "INSERT INTO evidence (event_id, service, version, kind, passed, details) "
        "SELECT e.event_id, e.service, e.version, e.kind, e.passed, e.details::jsonb "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[]) "
        "AS e(event_id, service, version, kind, passed, details) "
        "ON CONFLICT DO NOTHING RETURNING event_id",
        [f[0] for f in facts], [f[1] for f in facts], [f[2] for f in facts],
        [f[3].kind for f in facts], [f[3].passed for f in facts],
        [json.dumps(f[3].details) for f in facts],
    )  # fmt: skip
    return {r["event_id"] for r in rows}


async def recent_builds(conn: asyncpg.Connection, limit: int = 1000) -> list[Build]:
    rows = await conn.fetch(
        "SELECT service, version, digest, purl, author FROM builds "
        "ORDER BY registered_at DESC LIMIT $1",
        limit,
    )
    return [Build(**dict(r)) for r in rows]


async def add_evidence(
    conn: asyncpg.Connection, event_id: str, service: str, version: str, fact: EvidenceFact
) -> bool:
    """False if this evidence was recorded already."""
    added = await conn.fetchval(
        "INSERT INTO evidence (event_id, service, version, kind, passed, details) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT DO NOTHING RETURNING 1",
        event_id, service, version, fact.kind, fact.passed, json.dumps(fact.details),
    )  # fmt: skip
    return added is not None


_SNAPSHOT = """
SELECT b.service, b.version, b.digest, b.purl, b.author,
       ARRAY(SELECT ROW(e.event_id, e.kind, e.passed, e.details::text) FROM evidence e
             WHERE e.service = b.service AND e.version = b.version
             ORDER BY e.recorded_at, e.event_id) AS evidence,
       ARRAY(SELECT ROW(d.environment, d.deployed_at) FROM deployments d
             WHERE d.service = b.service AND d.version = b.version) AS deployed,
       ARRAY(SELECT ROW(a.environment, a.responder, a.decision) FROM approvals a
             WHERE a.service = b.service AND a.version = b.version) AS approvals,
       ARRAY(SELECT ROW(g.environment, g.result, g.policy_sha256) FROM decisions g
             WHERE g.service = b.service AND g.version = b.version) AS decisions,
       ARRAY(SELECT ROW(r.environment, r.version) FROM running r
             WHERE r.service = b.service) AS running,
       ARRAY(SELECT ROW(e.version, e.kind, e.passed, e.details::text) FROM evidence e
             WHERE e.service = b.service AND e.kind = 'benchmark' AND e.version <> b.version
               AND e.version IN (SELECT r.version FROM running r WHERE r.service = b.service)
             ORDER BY e.recorded_at, e.event_id) AS benchmarks
  FROM builds b
"""
_ONE = " WHERE b.service = $1 AND b.version = $2"
_MANY = " JOIN unnest($1::text[], $2::text[]) AS k(service, version) USING (service, version)"


async def snapshot(conn: asyncpg.Connection, service: str, version: str) -> BuildSnapshot | None:
    """What is known of a build (None: not registered): its evidence, where it was deployed,
    approvals and last decisions per environment, what runs in each environment and the
    benchmarks of those versions (baselines). One round trip."""
    row = await conn.fetchrow(_SNAPSHOT + _ONE, service, version)
    return None if row is None else _snapshot(row)


async def snapshots(
    conn: asyncpg.Connection, builds: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], BuildSnapshot]:
    """``snapshot`` of each (service, version) registered, in one round trip."""
    rows = await conn.fetch(_SNAPSHOT + _MANY, [s for s, _ in builds], [v for _, v in builds])
    return {(r["service"], r["version"]): _snapshot(r) for r in rows}


def _snapshot(row: asyncpg.Record) -> BuildSnapshot:
    approvals: dict[str, dict[str, str]] = {}
    for environment, responder, decision in row["approvals"]:
        approvals.setdefault(environment, {})[responder] = decision
    benchmarks: dict[str, list[EvidenceFact]] = {}
    for running_version, kind, passed, details in row["benchmarks"]:
        benchmarks.setdefault(running_version, []).append(
            EvidenceFact(kind, passed, json.loads(details))
        )
    return BuildSnapshot(
        build=Build(row["service"], row["version"], row["digest"], row["purl"], row["author"]),
        evidence=[
            (event_id, EvidenceFact(kind, passed, json.loads(details)))
            for event_id, kind, passed, details in row["evidence"]
        ],
        deployed=dict(row["deployed"]),
        approvals=approvals,
        decisions={env: (result, sha256) for env, result, sha256 in row["decisions"]},
        running=dict(row["running"]),
        benchmarks=benchmarks,
    )


async def record_decisions(
    conn: asyncpg.Connection, build: Build, policy_sha256: str, decisions: Sequence[Decision]
) -> None:
    """The last decision per environment, for each of ``decisions`` (one round trip)."""
    await record_all_decisions(conn, [(build, d) for d in decisions], policy_sha256)


async def record_all_decisions(
    conn: asyncpg.Connection, decided: Sequence[tuple[Build, Decision]], policy_sha256: str
) -> None:
    """The last decision per build and environment, for each (build, decision): one round
    trip for them all. (One decision per build and environment: ``judge`` makes no more.)"""
    await conn.execute(
        """INSERT INTO decisions (service, version, environment, result, score, policy_sha256)
           SELECT d.service, d.version, d.environment, d.result, d.score, $6
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
                  AS d(service, version, environment, result, score)
           ON CONFLICT (service, version, environment) DO UPDATE
           SET result = EXCLUDED.result, score = EXCLUDED.score,
               policy_sha256 = EXCLUDED.policy_sha256, decided_at = now()""",
        [b.service for b, _ in decided], [b.version for b, _ in decided],
        [d.environment for _, d in decided], [d.result.result for _, d in decided],
        [d.score for _, d in decided], policy_sha256,
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


async def soak_until(
    conn: asyncpg.Connection, service: str, version: str, due_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO soaking (service, version, due_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (service, version) DO UPDATE "
        "SET due_at = LEAST(soaking.due_at, EXCLUDED.due_at)",
        service, version, due_at,
    )  # fmt: skip


async def soak_all(conn: asyncpg.Connection, due: Sequence[tuple[str, str, datetime]]) -> None:
    """``soak_until`` for each (service, version, due_at): one round trip. (One per build.)"""
    await conn.execute(
        "INSERT INTO soaking (service, version, due_at) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
        "ON CONFLICT (service, version) DO UPDATE "
        "SET due_at = LEAST(soaking.due_at, EXCLUDED.due_at)",
        [d[0] for d in due], [d[1] for d in due], [d[2] for d in due],
    )  # fmt: skip


async def soaked(conn: asyncpg.Connection, now: datetime) -> list[tuple[str, str]]:
    """(service, version) of the builds whose soak has ended, in the order they ended; they
    leave the list."""
    rows = await conn.fetch(
        "WITH gone AS (DELETE FROM soaking WHERE due_at <= $1 RETURNING service, version, due_at) "
        "SELECT service, version FROM gone ORDER BY due_at, service, version",
        now,
    )
    return [(r["service"], r["version"]) for r in rows]
