"""What a measured phase cost Postgres: statements per role (``pg_stat_statements``), its
database's transactions (``pg_stat_database``) and the cluster's WAL writes and fsyncs
(``pg_stat_wal``), as deltas over the phase, per release.

A statement is one round trip, near enough: asyncpg sends each ``execute``/``fetch`` as one
Bind/Execute/Sync, so pg_stat_statements' ``calls`` count the round trips (an
``executemany`` of n rows is one round trip and n calls: an upper bound). BEGIN and COMMIT
count too (``pg_stat_statements.track_utility``, on by default). Statements are counted for
the services' roles only (each service logs in as ``lockstep_svc_<service>``); transactions
and fsyncs are the whole database's and cluster's, so the bench's own observers and anything
else running then are in them: bench a quiet machine.

Statement counts are current at once; a backend reports its transactions and WAL figures
when it has been idle a while (PostgreSQL 15: within ``FLUSH_LAG_S``), so the bench waits
that long after a phase before it counts.

``pg_stat_statements`` must be loaded (``infra/lockstep-infra up`` adds it to the cluster's
``shared_preload_libraries``); without it the statements are reported as unavailable, and
the rest is still counted."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from shared.settings import Settings

_STATEMENTS = """
SELECT r.rolname AS role, sum(s.calls)::bigint AS calls
  FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND r.rolname LIKE $1
 GROUP BY r.rolname
"""
_DATABASE = """
SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()
"""
FLUSH_LAG_S = 11.0  # an idle backend's pending statistics are flushed within 10 s
_WAL = "SELECT wal_records, wal_write, wal_sync FROM pg_stat_wal"


@dataclass
class PgCounters:
    statements: dict[str, int] | None  # per role; None: pg_stat_statements not loaded
    transactions: int
    wal_records: int
    wal_writes: int
    wal_syncs: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def pg_counters(settings: Settings, role_like: str = "lockstep_svc_%") -> PgCounters:
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        statements: dict[str, int] | None
        note = ""
        try:
            rows = await conn.fetch(_STATEMENTS, role_like)
            statements = {r["role"]: int(r["calls"]) for r in rows}
        except asyncpg.PostgresError as exc:  # not loaded, not created, or not allowed
            statements, note = None, f"pg_stat_statements unavailable: {exc}"
        transactions = int(await conn.fetchval(_DATABASE))
        wal = await conn.fetchrow(_WAL)
    finally:
        await conn.close()
    return PgCounters(
        statements=statements,
        transactions=transactions,
        wal_records=int(wal["wal_records"]),
        wal_writes=int(wal["wal_write"]),
        wal_syncs=int(wal["wal_sync"]),
        note=note,
    )


def per_release(before: PgCounters, after: PgCounters, releases: int) -> dict[str, Any]:
    """The phase's deltas, in total and per release (rounded to 0.1)."""
    n = max(releases, 1)

    def each(total: int) -> float:
        return round(total / n, 1)

    out: dict[str, Any] = {"releases": releases}
    if before.statements is not None and after.statements is not None:
        roles = {
            role: after.statements.get(role, 0) - before.statements.get(role, 0)
            for role in sorted(set(before.statements) | set(after.statements))
        }
        roles = {role: calls for role, calls in roles.items() if calls}
        out["statements_per_release"] = each(sum(roles.values()))
        out["statements_per_release_by_role"] = {r: each(c) for r, c in roles.items()}
    else:
        out["statements_per_release"] = None
        out["note"] = after.note or before.note
    out["transactions_per_release"] = each(after.transactions - before.transactions)
    out["wal_fsyncs_per_release"] = each(after.wal_syncs - before.wal_syncs)
    out["wal_writes_per_release"] = each(after.wal_writes - before.wal_writes)
    out["wal_records_per_release"] = each(after.wal_records - before.wal_records)
    return out
