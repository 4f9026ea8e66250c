"""Opening a service's own schema (``shared.service.service_pool``, ``shared.db.
read_only_connection``), with Postgres stood in for: which schema, which migrations in which
order, and that what was opened is closed, also when migrating fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

import shared.db
import shared.service
from shared.bus.handlers import Router
from shared.db import BUS_MIGRATIONS, MigrationSet, read_only_connection
from shared.service import ServiceSpec, create_service_pool, service_pool
from shared.settings import Settings

SETTINGS = Settings(namespace="unit", kafka_principal="admin")  # "things" is no principal
OWN = MigrationSet("things", "services.things")
SPEC = ServiceSpec(name="things", router=Router(), migrations=(OWN,))


class FakePool:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Calls:
    """What the stand-ins for ``create_pool`` and ``migrate`` were asked."""

    def __init__(self, fail_migrate: bool = False) -> None:
        self.fail_migrate = fail_migrate
        self.pools: list[tuple[str, str, int]] = []
        self.migrated: list[tuple[str, list[MigrationSet]]] = []
        self.pool = FakePool()

    async def create_pool(self, dsn: str, schema: str, *, max_size: int = 5) -> FakePool:
        self.pools.append((dsn, schema, max_size))
        return self.pool

    async def migrate(self, pool: FakePool, schema: str, sets: list[MigrationSet]) -> list[str]:
        assert pool is self.pool
        self.migrated.append((schema, sets))
        if self.fail_migrate:
            raise RuntimeError("a migration failed")
        return ["bus/001_bus.sql"]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    found = Calls()
    monkeypatch.setattr(shared.service, "create_pool", found.create_pool)
    monkeypatch.setattr(shared.service, "migrate", found.migrate)
    return found


async def test_a_service_pool_is_on_its_schema_with_the_bus_then_its_own_migrations(
    calls: Calls,
) -> None:
    async with service_pool(SPEC, SETTINGS) as pool:
        assert pool is calls.pool
        assert not calls.pool.closed
    assert calls.pools == [(SETTINGS.pg_dsn, "unit_things", 2)]
    assert calls.migrated == [("unit_things", [BUS_MIGRATIONS, OWN])]
    assert calls.pool.closed


async def test_a_service_pool_logs_in_as_the_services_own_role(
    calls: Calls, tmp_path: Path
) -> None:
    (tmp_path / "postgres.json").write_text(
        '{"things": {"user": "lockstep_svc_things", "password": "pw"}}'
    )
    settings = Settings(
        namespace="unit",
        pg_dsn="postgresql://lockstep:admin@db:5432/lockstep",
        credentials_dir=tmp_path,
    )
    async with service_pool(SPEC, settings):
        pass
    assert calls.pools == [
        ("postgresql://lockstep_svc_things:pw@db:5432/lockstep", "unit_things", 2)
    ]


async def test_a_service_pool_is_closed_when_its_user_fails(calls: Calls) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with service_pool(SPEC, SETTINGS, max_size=4):
            raise ValueError("boom")
    assert calls.pools[0][2] == 4
    assert calls.pool.closed


async def test_a_failed_migration_closes_the_pool_and_is_the_callers_to_tell(
    calls: Calls,
) -> None:
    calls.fail_migrate = True
    with pytest.raises(RuntimeError, match="a migration failed"):
        await create_service_pool(SPEC, SETTINGS)
    assert calls.pool.closed


async def test_create_service_pool_tells_what_it_applied_and_leaves_the_pool_open(
    calls: Calls,
) -> None:
    pool, applied = await create_service_pool(SPEC, SETTINGS, max_size=7)
    assert (pool, applied) == (calls.pool, ["bus/001_bus.sql"])
    assert calls.pools == [(SETTINGS.pg_dsn, "unit_things", 7)]
    assert not calls.pool.closed


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_read_only_connection_sees_the_schema_reads_only_and_migrates_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[tuple[str, dict[str, Any]]] = []
    conn = FakeConnection()

    async def connect(dsn: str, **kwargs: Any) -> FakeConnection:
        opened.append((dsn, kwargs))
        return conn

    async def no_migrations(*args: Any) -> list[str]:
        raise AssertionError("reading never migrates")

    monkeypatch.setattr(asyncpg, "connect", connect)
    monkeypatch.setattr(shared.db, "migrate", no_migrations)
    with pytest.raises(ValueError, match="boom"):
        async with read_only_connection(SETTINGS, "things") as got:
            assert got is conn
            assert not conn.closed
            raise ValueError("boom")
    assert conn.closed
    assert opened == [
        (
            SETTINGS.pg_dsn,
            {
                "server_settings": {
                    "search_path": "unit_things",
                    "default_transaction_read_only": "on",
                }
            },
        )
    ]
