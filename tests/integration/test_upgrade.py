"""An install of the previous version upgraded to this one, on the real Postgres: the gates,
promotion and incidents schemas as the previous version's migrations left them (each
service's first migration then created its own ``policy`` table; the gates service's with
``updated_by NOT NULL``), with traceparents in their own columns, migrated by
``shared.db.migrate`` as a service starting does. What was kept carries over into the
runtime's ``trace_threads``, and every install has the same ``policy`` table. The schemas
are dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
import pytest

from services.gates.app import SPEC as GATES
from services.incidents import store
from services.incidents.app import SPEC as INCIDENTS
from services.promotion.app import SPEC as PROMOTION
from shared.db import BUS_MIGRATIONS, MigrationSet, create_pool, drop_namespace_schemas, migrate
from shared.service import ServiceSpec
from shared.settings import Settings

pytestmark = pytest.mark.integration

# The first file of each component that the previous version did not have: everything named
# before it is the previous version's (policy/ had no migrations of its own then).
NEW_SINCE = {
    "bus": "003_trace_threads.sql",
    "policy": "001_policy.sql",
    "gates": "005_trace_threads.sql",
    "promotion": "004_trace_threads.sql",
    "incidents": "003_trace_threads.sql",
}

# The policy table each service's first migration created in the previous version (the parts
# of those files that are no longer in them), and promotion's 002 as it was then.
OLD_POLICY = {
    "gates": """
        CREATE TABLE policy (
            only_one    boolean PRIMARY KEY DEFAULT true CHECK (only_one),
            sha256      text NOT NULL,
            model       jsonb NOT NULL,
            updated_by  text NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );""",
    "promotion": """
        CREATE TABLE policy (
            only_one    boolean PRIMARY KEY DEFAULT true CHECK (only_one),
            sha256      text NOT NULL,
            model       jsonb NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        ALTER TABLE policy ADD COLUMN updated_by text;""",
    "incidents": """
        CREATE TABLE policy (
            only_one    boolean PRIMARY KEY DEFAULT true CHECK (only_one),
            sha256      text NOT NULL,
            model       jsonb NOT NULL,
            updated_by  text,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );""",
}

TP = [f"00-{uuid.UUID(int=i + 1).hex}-{i + 1:016x}-01" for i in range(8)]
T0 = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Previous(MigrationSet):
    """A component's migrations as the previous version had them."""

    before: str = ""

    def files(self) -> list[Traversable]:
        return [f for f in super().files() if f.name < self.before]


def migration_sets(spec: ServiceSpec) -> list[MigrationSet]:
    """What a service of this version migrates (as ``RunningService.setup`` does)."""
    return [BUS_MIGRATIONS, *spec.migrations]


def previous(sets: list[MigrationSet]) -> list[MigrationSet]:
    return [Previous(s.component, s.package, before=NEW_SINCE[s.component]) for s in sets]


@pytest.fixture(scope="module")
async def settings() -> AsyncIterator[Settings]:
    settings = Settings(namespace="it_" + uuid.uuid4().hex[:10])
    try:
        yield settings
    finally:
        await drop_namespace_schemas(settings)


Fill = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass
class Upgraded:
    conn: asyncpg.Connection
    applied: list[str]  # what the upgrade applied
    policy_before: set[tuple[Any, ...]]  # the policy table's shape before it


@asynccontextmanager
async def upgraded(settings: Settings, spec: ServiceSpec, fill: Fill) -> AsyncIterator[Upgraded]:
    """``spec``'s schema as the previous version left it, with what ``fill`` writes, then
    migrated to this version; a connection to it."""
    schema = settings.db_schema(spec.name)
    pool = await create_pool(settings.pg_dsn, schema, max_size=2)
    try:
        sets = migration_sets(spec)
        async with pool.acquire() as conn:
            await conn.execute(OLD_POLICY[spec.name])
        before = await migrate(pool, schema, previous(sets))
        assert f"{spec.name}/001_{spec.name}.sql" in before
        assert not [name for name in before if name.startswith("policy/")]
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO policy (sha256, model, updated_by) VALUES ('abc', '{}', 'platform')"
            )
            await fill(conn)
            policy_before = await policy_shape(conn)
        applied = await migrate(pool, schema, sets)
        async with pool.acquire() as conn:
            yield Upgraded(conn, applied, policy_before)
    finally:
        await pool.close()


async def threads(conn: asyncpg.Connection) -> dict[str, tuple[str | None, list[str]]]:
    rows = await conn.fetch("SELECT key, traceparent, links FROM trace_threads")
    return {r["key"]: (r["traceparent"], list(r["links"])) for r in rows}


async def policy_shape(conn: asyncpg.Connection) -> set[tuple[Any, ...]]:
    """The policy table's columns (names, types, nullability, defaults; not their order)."""
    rows = await conn.fetch(
        """SELECT column_name, data_type, is_nullable, column_default
             FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'policy'"""
    )
    return {tuple(r) for r in rows}


@pytest.fixture(scope="module")
async def fresh_policy(settings: Settings) -> set[tuple[Any, ...]]:
    """The policy table of an install that began with this version."""
    schema = settings.db_schema("fresh")
    pool = await create_pool(settings.pg_dsn, schema, max_size=1)
    try:
        await migrate(pool, schema, migration_sets(GATES))
        async with pool.acquire() as conn:
            return await policy_shape(conn)
    finally:
        await pool.close()


async def assert_the_one_policy_shape(up: Upgraded, fresh_policy: set[tuple[Any, ...]]) -> None:
    assert "policy/002_updated_by_nullable.sql" in up.applied
    assert ("updated_by", "text", "YES", None) in fresh_policy
    assert await policy_shape(up.conn) == fresh_policy
    # The model in force is kept; one put in force with no author is taken, as on a fresh one.
    assert await up.conn.fetchval("SELECT updated_by FROM policy") == "platform"
    await up.conn.execute("UPDATE policy SET updated_by = NULL")


async def test_gates_carries_builds_and_evidence_traceparents_over(
    settings: Settings, fresh_policy: set[tuple[Any, ...]]
) -> None:
    async def fill(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO builds (service, version, digest, purl, traceparent) "
            "VALUES ($1, $2, 'sha256:0', 'pkg:oci/x', $3)",
            [("checkout", "1.4.2", TP[0]), ("checkout", "1.4.3", None), ("cart", "2.0.0", TP[1])],
        )
        await conn.executemany(
            "INSERT INTO evidence (event_id, service, version, kind, passed, details, "
            "recorded_at, traceparent) VALUES ($1, $2, $3, 'tests', true, '{}', $4, $5)",
            [
                ("e2", "checkout", "1.4.2", T0 + timedelta(minutes=1), TP[3]),
                ("e1", "checkout", "1.4.2", T0, TP[2]),
                ("e3", "checkout", "1.4.2", T0, None),
                ("e4", "checkout", "1.4.3", T0, TP[4]),
            ],
        )

    async with upgraded(settings, GATES, fill) as up:
        assert ("updated_by", "text", "NO", None) in up.policy_before
        assert {"bus/003_trace_threads.sql", "gates/005_trace_threads.sql"} <= set(up.applied)
        assert await threads(up.conn) == {
            "checkout@1.4.2": (TP[0], [TP[2], TP[3]]),  # evidence in the order it came
            "checkout@1.4.3": (None, [TP[4]]),
            "cart@2.0.0": (TP[1], []),
        }
        await assert_the_one_policy_shape(up, fresh_policy)


async def test_promotion_carries_candidates_traceparents_over(
    settings: Settings, fresh_policy: set[tuple[Any, ...]]
) -> None:
    async def fill(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO candidates (service, version, environment, digest, purl, state, "
            "traceparent) VALUES ($1, $2, $3, 'sha256:0', 'pkg:oci/x', 'waiting', $4)",
            [
                ("checkout", "1.4.2", "prod-eu", TP[0]),
                ("checkout", "1.4.2", "staging", TP[1]),
                ("checkout", "1.4.3", "staging", None),
            ],
        )

    async with upgraded(settings, PROMOTION, fill) as up:
        assert {"bus/003_trace_threads.sql", "promotion/004_trace_threads.sql"} <= set(up.applied)
        assert await threads(up.conn) == {
            "checkout@1.4.2:prod-eu": (TP[0], []),
            "checkout@1.4.2:staging": (TP[1], []),
        }
        await assert_the_one_policy_shape(up, fresh_policy)


async def test_incidents_carries_deployments_and_incidents_traceparents_over(
    settings: Settings, fresh_policy: set[tuple[Any, ...]]
) -> None:
    async def fill(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO deployments (environment, service, version, digest, purl, "
            "promotion_id, rollback, traceparent, deployed_at) "
            "VALUES ('staging', 'api', $1, 'sha256:0', 'pkg:oci/api', 'prm', $2, $3, $4)",
            [
                ("1.0.0", False, TP[0], T0),
                ("2.0.0", False, TP[1], T0 + timedelta(hours=1)),
                ("1.0.0", True, TP[2], T0 + timedelta(hours=2)),  # rolled back to: newest
                ("3.0.0", False, TP[3], T0 + timedelta(hours=3)),
                ("3.0.0", False, None, T0 + timedelta(hours=4)),  # reported with no trace
            ],
        )
        await conn.executemany(
            "INSERT INTO incidents (id, dedup_key, service, environment, state, title, "
            "version, traceparent, first_signal_at, detected_at) "
            "VALUES ($1, $1, 'api', 'staging', $2, 't', '2.0.0', $3, $4, $4)",
            [("inc-1", "resolved", TP[1], T0), ("inc-2", "open", None, T0)],
        )

    async with upgraded(settings, INCIDENTS, fill) as up:
        assert {"bus/003_trace_threads.sql", "incidents/003_trace_threads.sql"} <= set(up.applied)
        assert await threads(up.conn) == {
            store.deployment_thread("api", "1.0.0", "staging"): (TP[2], []),
            store.deployment_thread("api", "2.0.0", "staging"): (TP[1], []),
            store.deployment_thread("api", "3.0.0", "staging"): (TP[3], []),
            store.incident_thread("inc-1"): (TP[1], []),
        }
        # This version reads them there.
        found = await store.get(up.conn, "inc-1")
        assert found is not None and found.traceparent == TP[1]
        latest = await store.latest_deployment(up.conn, "api", "staging")
        assert latest is not None and latest.version == "3.0.0"
        await assert_the_one_policy_shape(up, fresh_policy)
