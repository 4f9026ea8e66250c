"""Opening a service's own schema on the real Postgres: the pool migrated as ``lockstep run``
migrates it, once; the read-only connection that creates nothing, finds nothing where the
service never ran, and refuses to write."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from services.artifacts.api import open_artifacts
from services.flags.app import SPEC as FLAGS
from services.promotion.api import what_runs_where
from shared.db import create_pool, read_only_connection
from shared.service import create_service_pool, service_pool
from tests.integration.conftest import NamespaceFactory

pytestmark = pytest.mark.integration


async def test_a_service_pool_migrates_its_schema_once(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()
    async with service_pool(FLAGS, ns.settings) as pool:
        applied = {
            (r["component"], r["name"])
            for r in await pool.fetch("SELECT component, name FROM schema_migrations")
        }
        schema = await pool.fetchval("SELECT current_schema()")
    assert schema == ns.settings.db_schema("flags")
    assert {c for c, _ in applied} == {"bus", "flags"}
    pool, again = await create_service_pool(FLAGS, ns.settings)
    await pool.close()
    assert again == []


async def test_processes_starting_at_once_all_open_the_schema_none_fails(
    new_namespace: NamespaceFactory,
) -> None:
    # Two processes of one service that start together (the e2e tests, `run all` after a
    # reboot) both create the schema; Postgres's CREATE SCHEMA IF NOT EXISTS alone lets one
    # of them fail on pg_namespace's unique index.
    ns = await new_namespace()
    schema = ns.settings.db_schema("flags")
    for _ in range(3):
        async with ns.connect("flags") as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        pools = await asyncio.gather(
            *(create_pool(ns.settings.pg_dsn, schema, min_size=1, max_size=1) for _ in range(8)),
            return_exceptions=True,
        )
        failures = [p for p in pools if isinstance(p, BaseException)]
        for p in pools:
            if isinstance(p, asyncpg.Pool):
                await p.close()
        assert failures == []


async def test_reading_a_service_that_never_ran_finds_nothing_and_creates_nothing(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    assert await what_runs_where(ns.settings) == []
    async with open_artifacts(ns.settings) as artifacts:
        assert await artifacts.listed() == []
        assert await artifacts.show("svc", "1.0.0") is None
    conn = await asyncpg.connect(ns.settings.pg_dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])",
            [ns.settings.db_schema("artifacts"), ns.settings.db_schema("promotion")],
        )
    finally:
        await conn.close()
    assert found == 0


async def test_a_read_only_connection_refuses_to_write(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()
    async with service_pool(FLAGS, ns.settings):
        pass
    async with read_only_connection(ns.settings, "flags") as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM schema_migrations")
