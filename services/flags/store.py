"""The flags service's tables, read and written in the caller's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


def channel(schema: str) -> str:
    """Where a committed change is announced (payload: the environment) to every evaluator."""
    return f"{schema}_flags"


@dataclass(frozen=True)
class StoredFlag:
    environment: str
    key: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class FlagSetRow:
    environment: str
    revision: int
    evaluators: dict[str, Any]
    metadata: dict[str, Any]


async def lock_environment(conn: asyncpg.Connection, environment: str) -> FlagSetRow:
    """The environment's row, created if new and locked: changes to one environment are
    serialised, so its revision counts them exactly."""
    await conn.execute(
        "INSERT INTO environments (environment) VALUES ($1) ON CONFLICT DO NOTHING", environment
    )
    row = await conn.fetchrow(
        "SELECT environment, revision, evaluators::text, metadata::text FROM environments "
        "WHERE environment = $1 FOR UPDATE",
        environment,
    )
    assert row is not None
    return _set_row(row)


async def flag_set(conn: asyncpg.Connection, environment: str) -> FlagSetRow | None:
    row = await conn.fetchrow(
        "SELECT environment, revision, evaluators::text, metadata::text FROM environments "
        "WHERE environment = $1",
        environment,
    )
    return None if row is None else _set_row(row)


def _set_row(row: asyncpg.Record) -> FlagSetRow:
    return FlagSetRow(
        environment=row["environment"],
        revision=row["revision"],
        evaluators=json.loads(row["evaluators"]),
        metadata=json.loads(row["metadata"]),
    )


async def set_parts(
    conn: asyncpg.Connection,
    environment: str,
    evaluators: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    await conn.execute(
        "UPDATE environments SET evaluators = $2::jsonb, metadata = $3::jsonb "
        "WHERE environment = $1",
        environment,
        json.dumps(evaluators),
        json.dumps(metadata),
    )


async def bump_revision(conn: asyncpg.Connection, environment: str) -> int:
    revision: int = await conn.fetchval(
        "UPDATE environments SET revision = revision + 1 WHERE environment = $1 RETURNING revision",
        environment,
    )
    return revision


_FLAG_COLUMNS = (
    "environment, flag_key, version, definition::text, created_at, updated_at, updated_by"
)


def _flag(row: asyncpg.Record) -> StoredFlag:
    return StoredFlag(
        environment=row["environment"],
        key=row["flag_key"],
        version=row["version"],
        definition=json.loads(row["definition"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def get_flag(conn: asyncpg.Connection, environment: str, key: str) -> StoredFlag | None:
    row = await conn.fetchrow(
        f"SELECT {_FLAG_COLUMNS} FROM flags WHERE environment = $1 AND flag_key = $2",
        environment,
        key,
    )
    return None if row is None else _flag(row)


async def flags_of(conn: asyncpg.Connection, environment: str | None) -> list[StoredFlag]:
    rows = await conn.fetch(
        f"SELECT {_FLAG_COLUMNS} FROM flags WHERE $1::text IS NULL OR environment = $1 "
        "ORDER BY environment, flag_key",
        environment,
    )
    return [_flag(r) for r in rows]


async def environments(conn: asyncpg.Connection) -> list[str]:
    return [r["environment"] for r in await conn.fetch("SELECT environment FROM environments")]


async def write_flag(
    conn: asyncpg.Connection,
    environment: str,
    key: str,
    version: int,
    definition: dict[str, Any] | None,
    at: datetime,
    by: str,
) -> None:
    if definition is None:
        await conn.execute(
            "DELETE FROM flags WHERE environment = $1 AND flag_key = $2", environment, key
        )
        return
    await conn.execute(
        "INSERT INTO flags (environment, flag_key, version, definition, created_at, updated_at, "
        "updated_by) VALUES ($1, $2, $3, $4::jsonb, $5, $5, $6) "
        "ON CONFLICT (environment, flag_key) DO UPDATE SET version = EXCLUDED.version, "
        "definition = EXCLUDED.definition, updated_at = EXCLUDED.updated_at, "
        "updated_by = EXCLUDED.updated_by",
        environment,
        key,
        version,
        json.dumps(definition),
        at,
        by,
    )


async def last_version(conn: asyncpg.Connection, environment: str, key: str) -> int:
    """The flag's last version, deleted or not (a re-created flag continues its history)."""
    found: int | None = await conn.fetchval(
        "SELECT max(version) FROM flag_changes WHERE environment = $1 AND flag_key = $2",
        environment,
        key,
    )
    return found or 0


async def record_change(
    conn: asyncpg.Connection,
    *,
    environment: str,
    key: str,
    version: int,
    action: str,
    source: str,
    by: str,
    reason: str,
    previous: dict[str, Any] | None,
    definition: dict[str, Any] | None,
    request_id: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO flag_changes (environment, flag_key, version, action, source, changed_by, "
        "reason, previous, definition, request_id, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11)",
        environment,
        key,
        version,
        action,
        source,
        by,
        reason,
        None if previous is None else json.dumps(previous),
        None if definition is None else json.dumps(definition),
        request_id,
        at,
    )


@dataclass(frozen=True)
class ChangeRow:
    version: int
    action: str
    source: str
    changed_by: str
    reason: str
    at: datetime
    request_id: str | None


async def history(
    conn: asyncpg.Connection, environment: str, key: str, limit: int = 50
) -> list[ChangeRow]:
    rows = await conn.fetch(
        "SELECT version, action, source, changed_by, reason, at, request_id FROM flag_changes "
        "WHERE environment = $1 AND flag_key = $2 ORDER BY version DESC LIMIT $3",
        environment,
        key,
        limit,
    )
    return [ChangeRow(**dict(r)) for r in rows]


@dataclass(frozen=True)
class Rollout:
    id: int
    environment: str
    flag_key: str
    variant: str
    other_variant: str
    steps: list[list[int]]
    next_step: int
    started_at: datetime
    started_by: str
    state: str


_ROLLOUT_COLUMNS = (
    "id, environment, flag_key, variant, other_variant, steps::text, next_step, started_at, "
    "started_by, state"
)


def _rollout(row: asyncpg.Record) -> Rollout:
    values = dict(row)
    values["steps"] = json.loads(values.pop("steps"))
    return Rollout(**values)


async def active_rollout(conn: asyncpg.Connection, environment: str, key: str) -> Rollout | None:
    row = await conn.fetchrow(
        f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE environment = $1 AND flag_key = $2 "
        "AND state = 'active'",
        environment,
        key,
    )
    return None if row is None else _rollout(row)


async def active_rollouts(conn: asyncpg.Connection, environment: str | None) -> list[Rollout]:
    rows = await conn.fetch(
        f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE state = 'active' "
        "AND ($1::text IS NULL OR environment = $1) ORDER BY started_at",
        environment,
    )
    return [_rollout(r) for r in rows]


async def start_rollout(
    conn: asyncpg.Connection,
    *,
    environment: str,
    key: str,
    variant: str,
    other: str,
    steps: list[list[int]],
    at: datetime,
    by: str,
) -> int:
    await end_rollout(conn, environment, key, "replaced", at, f"replaced by a rollout from {by}")
    done = len(steps) == 1
    rollout_id: int = await conn.fetchval(
        "INSERT INTO rollouts (environment, flag_key, variant, other_variant, steps, next_step, "
        "started_at, started_by, state, ended_at) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, 1, $6, $7, $8, $9) RETURNING id",
        environment,
        key,
        variant,
        other,
        json.dumps(steps),
        at,
        by,
        "done" if done else "active",
        at if done else None,
    )
    return rollout_id


async def end_rollout(
    conn: asyncpg.Connection, environment: str, key: str, state: str, at: datetime, reason: str
) -> bool:
    status: str = await conn.execute(
        "UPDATE rollouts SET state = $3, ended_at = $4, ended_reason = $5 "
        "WHERE environment = $1 AND flag_key = $2 AND state = 'active'",
        environment,
        key,
        state,
        at,
        reason,
    )
    return status != "UPDATE 0"


async def step_rollout(
    conn: asyncpg.Connection, rollout_id: int, next_step: int, done: bool, at: datetime
) -> None:
    await conn.execute(
        "UPDATE rollouts SET next_step = $2, state = CASE WHEN $3 THEN 'done' ELSE state END, "
        "ended_at = CASE WHEN $3 THEN $4 ELSE ended_at END WHERE id = $1",
        rollout_id,
        next_step,
        done,
        at,
    )


async def finished_rollout(conn: asyncpg.Connection, environment: str, key: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM rollouts WHERE environment = $1 AND flag_key = $2 "
        "AND state = 'done')",
        environment,
        key,
    )
    return found


async def record_evaluations(
    conn: asyncpg.Connection, seen: dict[tuple[str, str], tuple[datetime, int]]
) -> None:
    await conn.executemany(
        "INSERT INTO evaluations (environment, flag_key, last_evaluated_at, count) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (environment, flag_key) DO UPDATE SET "
        "last_evaluated_at = GREATEST(evaluations.last_evaluated_at, EXCLUDED.last_evaluated_at), "
        "count = evaluations.count + EXCLUDED.count",
        [(env, key, at, n) for (env, key), (at, n) in seen.items()],
    )


async def last_evaluations(conn: asyncpg.Connection) -> dict[tuple[str, str], datetime]:
    rows = await conn.fetch("SELECT environment, flag_key, last_evaluated_at FROM evaluations")
    return {(r["environment"], r["flag_key"]): r["last_evaluated_at"] for r in rows}
