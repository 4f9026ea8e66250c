"""The promotion service's tables (its own schema). ``snapshot`` reads, in one round trip,
everything a look at a service (or a train) in an environment needs (``decide.look_at``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from policy.in_force import HOLD_MODEL
from services.promotion.decide import (
    BadVersion,
    Candidate,
    IncidentHold,
    Running,
    Snapshot,
    Tell,
)

_CANDIDATE = "service, version, environment, digest, purl, state, holds::text, created_at"


def service_key(environment: str, service: str) -> str:
    """The key of the lock on decisions about ``service`` in ``environment`` (as the bus
    takes it for a batch, ``Router.handles(..., locks=)``, and ``lock_keys`` by hand). What
    must be serial is a service in an environment; a train's members are locked together by
    locking each member's key."""
    return f"env:{environment}:{service}"


async def lock_keys(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Hold the model in force (shared), then lock ``keys`` (``service_key``s) in sorted
    order, until commit: one statement, the same locks as the bus's declared ones."""
    ordered = sorted(set(keys))
    await conn.execute(
        f"""SELECT {HOLD_MODEL},
                   (SELECT count(pg_advisory_xact_lock(l.h))
                      FROM (SELECT hashtextextended(current_schema() || ':' || k.key, 0) AS h
                              FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
                             ORDER BY k.n) l)""",
        ordered,
    )


async def upsert_candidates(
    conn: asyncpg.Connection, facts: Sequence[tuple[str, str, str, str, str, str, datetime]]
) -> set[tuple[str, str, str]]:
    """Gate decisions arrived: each (service, version, environment, digest, purl, state, at)
    once (no two of one build and environment); an approved (or superseded) candidate stays
    so. The (service, version, environment)s that were written (the others: arrived before,
    and nothing changed). One statement."""
    if not facts:
        return set()
    rows = await conn.fetch(
        """INSERT INTO candidates (service, version, environment, digest, purl, state, created_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::timestamptz[])
           ON CONFLICT (service, version, environment) DO UPDATE
           SET state = EXCLUDED.state
           WHERE candidates.state NOT IN ('approved', 'superseded')
           RETURNING service, version, environment""",
        *([f[i] for f in facts] for i in range(7)),
    )  # fmt: skip
    return {(r["service"], r["version"], r["environment"]) for r in rows}


def _candidate(row: Sequence[Any]) -> Candidate:
    service, version, environment, digest, purl, state, holds, created_at = row
    return Candidate(
        service=service, version=version, environment=environment, digest=digest, purl=purl,
        state=state, holds=json.loads(holds), created_at=created_at,
    )  # fmt: skip


_SNAPSHOTS = f"""
WITH want AS (SELECT * FROM unnest($1::text[], $2::text[]) AS w(environment, service))
SELECT e.environment,
       ARRAY(SELECT ROW({_CANDIDATE}) FROM candidates
              WHERE environment = e.environment
                AND service IN (SELECT service FROM want WHERE want.environment = e.environment)
                AND state IN ('waiting', 'gate-failed')) AS candidates,
       ARRAY(SELECT ROW(service, version, digest, deployed_at) FROM ledger
              WHERE environment = e.environment) AS running,
       ARRAY(SELECT ROW(service, version, environment) FROM ledger
              WHERE service IN (SELECT service FROM want WHERE want.environment = e.environment)
             ) AS runs,
       ARRAY(SELECT ROW(service, incident_id, reason, since) FROM incident_holds
              WHERE environment = e.environment
                AND service IN (SELECT service FROM want WHERE want.environment = e.environment)
             ) AS incident_holds,
       ARRAY(SELECT ROW(service, version, environment, incident_id, reason, marked_at)
               FROM bad_versions
              WHERE service IN (SELECT service FROM want WHERE want.environment = e.environment)
             ) AS bad_versions,
       ARRAY(SELECT ROW(c.service, c.version) FROM candidates c
               JOIN unnest($3::text[], $4::text[], $5::text[]) AS b(environment, service, version)
                 ON (c.environment, c.service, c.version) = (b.environment, b.service, b.version)
              WHERE c.environment = e.environment AND c.state IN ('approved', 'superseded')
             ) AS settled
  FROM (SELECT DISTINCT environment FROM want) e
"""


async def snapshot(conn: asyncpg.Connection, services: Sequence[str], environment: str) -> Snapshot:
    """What is known of ``services`` in ``environment`` (``snapshots``). One round trip."""
    return (await snapshots(conn, {environment: services}))[environment]


async def snapshots(
    conn: asyncpg.Connection,
    wanted: Mapping[str, Sequence[str]],
    builds: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Snapshot]:
    """For each environment, what is known of its ``wanted`` services there: their waiting
    and gate-failed builds there, what runs there (every service's), where each of their
    versions runs, their incident holds there, their versions marked bad, and which of
    ``builds`` (environment, service, version) are approved or superseded there. One round
    trip for every environment."""
    pairs = [(env, service) for env, services in wanted.items() for service in services]
    rows = await conn.fetch(
        _SNAPSHOTS, [e for e, _ in pairs], [s for _, s in pairs],
        [b[0] for b in builds], [b[1] for b in builds], [b[2] for b in builds],
    )  # fmt: skip
    found = {row["environment"]: _snapshot(row) for row in rows}
    return {env: found.get(env, Snapshot(environment=env)) for env in wanted}


def _snapshot(row: asyncpg.Record) -> Snapshot:
    waiting: dict[str, list[Candidate]] = {}
    gate_failed: dict[str, list[Candidate]] = {}
    for r in row["candidates"]:
        c = _candidate(r)
        (waiting if c.state == "waiting" else gate_failed).setdefault(c.service, []).append(c)
    runs_in: dict[tuple[str, str], set[str]] = {}
    for service, version, env in row["runs"]:
        runs_in.setdefault((service, version), set()).add(env)
    return Snapshot(
        environment=row["environment"],
        waiting=waiting,
        gate_failed=gate_failed,
        running={s: Running(v, d, at) for s, v, d, at in row["running"]},
        runs_in=runs_in,
        incident_holds=[IncidentHold(*r) for r in row["incident_holds"]],
        bad_versions=[BadVersion(*r) for r in row["bad_versions"]],
        settled=frozenset((service, version) for service, version in row["settled"]),
    )


async def waiting_pairs(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT DISTINCT service, environment FROM candidates WHERE state = 'waiting'"
    )
    return [(r["service"], r["environment"]) for r in rows]


async def due(conn: asyncpg.Connection, now: datetime) -> list[Candidate]:
    rows = await conn.fetch(
        f"SELECT {_CANDIDATE} FROM candidates WHERE state = 'waiting' AND next_check <= $1 "
        "ORDER BY next_check",
        now,
    )
    return [_candidate(tuple(r)) for r in rows]


async def set_states(conn: asyncpg.Connection, found: Sequence[tuple[Candidate, str]]) -> None:
    """Move each (candidate, state) to its state (one round trip)."""
    if not found:
        return
    await conn.execute(
        """UPDATE candidates SET state = c.state
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                  AS c(service, version, environment, state)
            WHERE (candidates.service, candidates.version, candidates.environment)
                = (c.service, c.version, c.environment)""",
        [c.service for c, _ in found], [c.version for c, _ in found],
        [c.environment for c, _ in found], [state for _, state in found],
    )  # fmt: skip


async def set_holds(conn: asyncpg.Connection, told: Sequence[Tell]) -> None:
    """What holds each candidate, and when to look at it again (one round trip)."""
    if not told:
        return
    await conn.execute(
        """UPDATE candidates SET holds = c.holds::jsonb, next_check = c.next_check
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
                  AS c(service, version, environment, holds, next_check)
            WHERE (candidates.service, candidates.version, candidates.environment)
                = (c.service, c.version, c.environment)""",
        [t.candidate.service for t in told], [t.candidate.version for t in told],
        [t.candidate.environment for t in told], [json.dumps(t.views) for t in told],
        [t.next_check for t in told],
    )  # fmt: skip


async def running(conn: asyncpg.Connection, environment: str) -> dict[str, Running]:
    rows = await conn.fetch(
        "SELECT service, version, digest, deployed_at FROM ledger WHERE environment = $1",
        environment,
    )
    return {r["service"]: Running(r["version"], r["digest"], r["deployed_at"]) for r in rows}


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


async def add_promotions(
    conn: asyncpg.Connection, made: Sequence[tuple[str, Candidate, str | None]], at: datetime
) -> set[str]:
    """Record each (promotion id, candidate, train); the ids recorded now (one already made,
    by a redelivery or a second look, is not). One round trip."""
    if not made:
        return set()
    rows = await conn.fetch(
        """INSERT INTO promotions (promotion_id, service, version, environment, digest, train,
                                  state, approved_at)
           SELECT p.promotion_id, p.service, p.version, p.environment, p.digest, p.train,
                  'approved', $7
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS p(promotion_id, service, version, environment, digest, train)
           ON CONFLICT DO NOTHING RETURNING promotion_id""",
        [pid for pid, _, _ in made], [c.service for _, c, _ in made],
        [c.version for _, c, _ in made], [c.environment for _, c, _ in made],
        [c.digest for _, c, _ in made], [train for _, _, train in made], at,
    )  # fmt: skip
    return {r["promotion_id"] for r in rows}


async def matrix(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """What runs where: the ledger's rows (environment, service, version, digest,
    deployed_at), one per (environment, service), replaced by each deployment; by service
    then environment."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT environment, service, version, digest, deployed_at FROM ledger "
        "ORDER BY service, environment"
    )
    return rows


async def record_history(
    conn: asyncpg.Connection, *, environment: str, service: str, version: str, digest: str,
    promotion_id: str, rollback: bool, at: datetime,
) -> bool:  # fmt: skip
    """Keep one deployment in the history; False if it is there already (its deployer
    reported it again, under the same event id or another): one row per deployment."""
    made = await conn.fetchval(
        """INSERT INTO deployment_history (environment, service, version, digest, promotion_id,
                                           rollback, deployed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT ON CONSTRAINT deployment_history_once DO NOTHING RETURNING 1""",
        environment, service, version, digest, promotion_id, rollback, at,
    )  # fmt: skip
    return made is not None


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
