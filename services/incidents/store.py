"""The incidents service's tables, read and written in the caller's transaction.

The traces work about a deployment or an incident continues are kept by the runtime (the
bus's ``trace_threads``: ``HandlerContext.remember``, ``.continuing``) under the keys
``deployment_thread`` and ``incident_thread`` name; the ``traceparent`` columns of
``deployments`` and ``incidents`` are neither written nor read any more.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg


def deployment_thread(service: str, version: str, environment: str) -> str:
    """The key of a deployment's trace thread: the span that handled the newest report of
    ``service@version`` running in ``environment`` (an incident about it joins that trace)."""
    return f"deploy:{service}@{version}:{environment}"


def incident_thread(incident_id: str) -> str:
    """The key of an incident's trace thread: the span that detected it, in the trace of the
    release it is about; work about the incident continues it."""
    return f"incident:{incident_id}"


@dataclass(frozen=True)
class Deployment:
    environment: str
    service: str
    version: str
    digest: str
    purl: str
    promotion_id: str
    rollback: bool
    deployed_at: datetime

    @property
    def thread(self) -> str:
        return deployment_thread(self.service, self.version, self.environment)


async def record_deployment(conn: asyncpg.Connection, d: Deployment) -> None:
    await conn.execute(
        """INSERT INTO deployments (environment, service, version, digest, purl, promotion_id,
                                    rollback, deployed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        d.environment, d.service, d.version, d.digest, d.purl, d.promotion_id, d.rollback,
        d.deployed_at,
    )  # fmt: skip


async def deployment_at(
    conn: asyncpg.Connection, service: str, environment: str, at: datetime
) -> Deployment | None:
    """What ran at ``at``: the newest deployment at or before it."""
    row = await conn.fetchrow(
        """SELECT environment, service, version, digest, purl, promotion_id, rollback,
                  deployed_at
           FROM deployments WHERE service = $1 AND environment = $2 AND deployed_at <= $3
           ORDER BY deployed_at DESC, id DESC LIMIT 1""",
        service, environment, at,
    )  # fmt: skip
    return None if row is None else Deployment(**dict(row))


async def latest_deployment(
    conn: asyncpg.Connection, service: str, environment: str
) -> Deployment | None:
    row = await conn.fetchrow(
        """SELECT environment, service, version, digest, purl, promotion_id, rollback,
                  deployed_at
           FROM deployments WHERE service = $1 AND environment = $2
           ORDER BY deployed_at DESC, id DESC LIMIT 1""",
        service, environment,
    )  # fmt: skip
    return None if row is None else Deployment(**dict(row))


async def previous_version(
    conn: asyncpg.Connection, service: str, environment: str, before: Deployment
) -> str | None:
    found: str | None = await conn.fetchval(
        """SELECT version FROM deployments
           WHERE service = $1 AND environment = $2 AND deployed_at < $3 AND version <> $4
           ORDER BY deployed_at DESC, id DESC LIMIT 1""",
        service, environment, before.deployed_at, before.version,
    )  # fmt: skip
    return found


async def record_signal(
    conn: asyncpg.Connection, *, event_id: str, service: str, environment: str, metric: str,
    value: float | None, version: str | None, kind: str, status: str, source: str,
    dedup_key: str | None, observed_at: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        """INSERT INTO signals (event_id, service, environment, metric, value, version, kind,
                                status, source, dedup_key, observed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        event_id, service, environment, metric, value, version, kind, status, source,
        dedup_key, observed_at,
    )  # fmt: skip


async def baseline(
    conn: asyncpg.Connection, service: str, environment: str, metric: str, version: str
) -> float | None:
    """The mean of ``metric`` while ``version`` ran (the previous version's level)."""
    found: float | None = await conn.fetchval(
        """SELECT avg(value) FROM signals WHERE service = $1 AND environment = $2
           AND metric = $3 AND version = $4 AND value IS NOT NULL""",
        service, environment, metric, version,
    )  # fmt: skip
    return found


@dataclass(frozen=True)
class StreakRow:
    started_at: datetime
    last_at: datetime
    failures: int


async def get_streak(
    conn: asyncpg.Connection, criterion: str, service: str, environment: str
) -> StreakRow | None:
    row = await conn.fetchrow(
        """SELECT started_at, last_at, failures FROM breaches
           WHERE criterion = $1 AND service = $2 AND environment = $3 FOR UPDATE""",
        criterion, service, environment,
    )  # fmt: skip
    return None if row is None else StreakRow(**dict(row))


async def put_streak(
    conn: asyncpg.Connection, criterion: str, service: str, environment: str,
    streak: StreakRow | None,
) -> None:  # fmt: skip
    if streak is None:
        await conn.execute(
            "DELETE FROM breaches WHERE criterion = $1 AND service = $2 AND environment = $3",
            criterion, service, environment,
        )  # fmt: skip
        return
    await conn.execute(
        """INSERT INTO breaches (criterion, service, environment, started_at, last_at, failures)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (criterion, service, environment) DO UPDATE SET
             started_at = EXCLUDED.started_at, last_at = EXCLUDED.last_at,
             failures = EXCLUDED.failures""",
        criterion, service, environment, streak.started_at, streak.last_at, streak.failures,
    )  # fmt: skip


@dataclass(frozen=True)
class Incident:
    id: str
    dedup_key: str
    service: str
    environment: str
    state: str
    title: str
    criterion: str | None
    version: str | None
    digest: str | None
    purl: str | None
    promotion_id: str | None
    traceparent: str | None  # the incident's trace thread (not a column of its own)
    drill: bool
    signals: int
    first_signal_at: datetime
    detected_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    rollback_at: datetime | None
    rolled_back_at: datetime | None
    rolled_back_to: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    escalation_level: int


_COLUMNS = [f.name for f in fields(Incident) if f.name != "traceparent"]
# An incident with the span its trace thread continues (the thread is the runtime's table;
# a subquery, not a join, so that FOR UPDATE locks the incident alone).
_INCIDENT = (
    f"SELECT {', '.join(_COLUMNS)}, (SELECT t.traceparent FROM trace_threads t "
    f"WHERE t.key = '{incident_thread('')}' || incidents.id) AS traceparent FROM incidents"
)


def new_id() -> str:
    return "inc-" + uuid.uuid4().hex[:12]


async def open_incident_for(conn: asyncpg.Connection, dedup_key: str) -> Incident | None:
    row = await conn.fetchrow(
        f"{_INCIDENT} WHERE dedup_key = $1 AND state <> 'resolved' FOR UPDATE", dedup_key
    )
    return None if row is None else Incident(**dict(row))


async def get(conn: asyncpg.Connection, incident_id: str, *, lock: bool = False) -> Incident | None:
    row = await conn.fetchrow(
        f"{_INCIDENT} WHERE id = $1" + (" FOR UPDATE" if lock else ""), incident_id
    )
    return None if row is None else Incident(**dict(row))


async def listed(conn: asyncpg.Connection, include_resolved: bool) -> list[Incident]:
    rows = await conn.fetch(
        f"{_INCIDENT} WHERE $1 OR state <> 'resolved' ORDER BY detected_at DESC LIMIT 200",
        include_resolved,
    )
    return [Incident(**dict(r)) for r in rows]


async def insert(conn: asyncpg.Connection, incident: Incident) -> bool:
    """False if another open incident has the key (a concurrent duplicate). Its trace
    thread is the caller's to remember."""
    values = {name: getattr(incident, name) for name in _COLUMNS}
    columns = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    made = await conn.fetchval(
        f"INSERT INTO incidents ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING RETURNING 1",
        *values.values(),
    )
    return made is not None


async def update(conn: asyncpg.Connection, incident_id: str, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    await conn.execute(f"UPDATE incidents SET {sets} WHERE id = $1", incident_id, *fields.values())


async def open_for_service(
    conn: asyncpg.Connection, service: str, environment: str
) -> list[Incident]:
    rows = await conn.fetch(
        f"{_INCIDENT} WHERE service = $1 AND environment = $2 AND state <> 'resolved' "
        "ORDER BY detected_at",
        service, environment,
    )  # fmt: skip
    return [Incident(**dict(r)) for r in rows]


async def unacknowledged(conn: asyncpg.Connection) -> list[Incident]:
    """Open incidents nobody has taken, locked (an acknowledgement in flight is waited for,
    and the incident is then left out; another instance's turn skips them)."""
    rows = await conn.fetch(
        f"{_INCIDENT} WHERE state = 'open' ORDER BY detected_at FOR UPDATE SKIP LOCKED"
    )
    return [Incident(**dict(r)) for r in rows]


async def note(conn: asyncpg.Connection, incident_id: str, at: datetime, kind: str,
               detail: str) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO timeline (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        incident_id, at, kind, detail,
    )  # fmt: skip


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    kind: str
    detail: str


async def timeline(conn: asyncpg.Connection, incident_id: str) -> list[TimelineRow]:
    rows = await conn.fetch(
        "SELECT at, kind, detail FROM timeline WHERE incident_id = $1 ORDER BY at, id",
        incident_id,
    )
    return [TimelineRow(**dict(r)) for r in rows]


@dataclass(frozen=True)
class RunbookRun:
    incident_id: str
    runbook: str
    steps: list[dict[str, Any]]
    next_step: int
    state: str
    step_started_at: datetime | None


_RUN = (
    "SELECT incident_id, runbook, steps::text, next_step, state, step_started_at FROM runbook_runs"
)


def _run(row: asyncpg.Record) -> RunbookRun:
    values = dict(row)
    values["steps"] = json.loads(values.pop("steps"))
    return RunbookRun(**values)


async def start_runbook(conn: asyncpg.Connection, incident_id: str, runbook: str,
                        steps: list[dict[str, Any]]) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO runbook_runs (incident_id, runbook, steps, state) "
        "VALUES ($1, $2, $3::jsonb, 'running') ON CONFLICT DO NOTHING",
        incident_id, runbook, json.dumps(steps),
    )  # fmt: skip


async def runbook_run(conn: asyncpg.Connection, incident_id: str) -> RunbookRun | None:
    row = await conn.fetchrow(f"{_RUN} WHERE incident_id = $1 FOR UPDATE", incident_id)
    return None if row is None else _run(row)


async def running_runbooks(conn: asyncpg.Connection) -> list[RunbookRun]:
    rows = await conn.fetch(f"{_RUN} WHERE state = 'running' FOR UPDATE SKIP LOCKED")
    return [_run(r) for r in rows]


async def set_runbook(conn: asyncpg.Connection, incident_id: str, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=2))
    await conn.execute(
        f"UPDATE runbook_runs SET {sets} WHERE incident_id = $1", incident_id, *fields.values()
    )


async def queue_webhook(conn: asyncpg.Connection, incident_id: str, url: str,
                        payload: dict[str, Any], at: datetime) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO notifications (incident_id, url, payload, next_attempt_at) "
        "VALUES ($1, $2, $3::jsonb, $4)",
        incident_id, url, json.dumps(payload), at,
    )  # fmt: skip


@dataclass(frozen=True)
class Drill:
    incident_id: str
    service: str
    environment: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None  # 'rolled back' | 'timed out'
    detail: str | None


async def record_drill(
    conn: asyncpg.Connection, incident_id: str, service: str, environment: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO drills (incident_id, service, environment, started_at) "
        "VALUES ($1, $2, $3, $4)",
        incident_id, service, environment, at,
    )  # fmt: skip


async def drill(conn: asyncpg.Connection, incident_id: str) -> Drill | None:
    row = await conn.fetchrow(
        "SELECT incident_id, service, environment, started_at, finished_at, outcome, detail "
        "FROM drills WHERE incident_id = $1",
        incident_id,
    )
    return None if row is None else Drill(**dict(row))


async def time_out_drill(
    conn: asyncpg.Connection, incident_id: str, at: datetime, detail: str
) -> None:
    """A drill still running is over: timed out (one that finished meanwhile is kept)."""
    await conn.execute(
        "UPDATE drills SET finished_at = $2, outcome = 'timed out', detail = $3 "
        "WHERE incident_id = $1 AND finished_at IS NULL",
        incident_id, at, detail,
    )  # fmt: skip
