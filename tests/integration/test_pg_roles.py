"""One Postgres role per service, on the real Postgres with the roles `infra/lockstep-infra up`
made (their passwords in the credentials file it wrote): a service's role reads, writes and
migrates its own schema, and is refused another service's schema and `public`; the
administrator still reads every schema, as the CLI does."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from events import ArtifactPackaged, ArtifactPublished
from services.artifacts.api import open_artifacts
from services.artifacts.app import SPEC as ARTIFACTS
from services.catalog import SERVICES
from services.gates.app import SPEC as GATES
from shared.bus.handlers import Router
from shared.db import SchemaNotOurs, create_pool, drop_namespace_schemas, read_only_connection
from shared.pg_logins import PG_CREDENTIALS_FILE, read_credentials
from shared.service import ServiceSpec, create_service_pool
from shared.settings import Settings
from tests.integration.conftest import INFRA, Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration


def require_roles(settings: Settings) -> None:
    """The roles are part of the infrastructure these tests stand on: missing is a failure."""
    found = read_credentials(settings.credentials_dir / PG_CREDENTIALS_FILE)
    missing = {"artifacts", "gates"} - found.keys()
    if missing:
        pytest.fail(
            f"no Postgres role for {', '.join(sorted(missing))} in "
            f"{settings.credentials_dir / PG_CREDENTIALS_FILE}; run `{INFRA} up` first"
        )


@asynccontextmanager
async def own_pool(ns: Namespace, spec: ServiceSpec) -> AsyncIterator[asyncpg.Pool]:
    """``spec``'s pool as ``lockstep run`` opens it: its own role, its schema, migrated."""
    require_roles(ns.settings)
    pool, applied = await create_service_pool(spec, ns.settings)
    try:
        assert f"{spec.name}/001_{spec.name}.sql" in applied  # its migrations ran as its role
        yield pool
    finally:
        await pool.close()


async def test_a_service_role_owns_reads_and_writes_its_own_schema(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    schema = ns.settings.db_schema("artifacts")
    async with own_pool(ns, ARTIFACTS) as pool:
        assert await pool.fetchval("SELECT current_user") == "lockstep_svc_artifacts"
        owners = await pool.fetch(
            """SELECT DISTINCT c.relowner::regrole::text AS owner
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1""",
            schema,
        )
        assert [r["owner"] for r in owners] == ["lockstep_svc_artifacts"]
        assert (
            await pool.fetchval(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema
            )
            == "lockstep_svc_artifacts"
        )
        await pool.execute(
            """INSERT INTO rejections (purl, code, reason, event_id)
               VALUES ('pkg:x', 't', 'test', 'e-1')"""
        )
        assert await pool.fetchval("SELECT count(*) FROM rejections") == 1
        await pool.execute("DELETE FROM rejections")


async def test_a_service_role_is_refused_another_services_schema_and_public(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    artifacts_schema = ns.settings.db_schema("artifacts")
    async with own_pool(ns, ARTIFACTS), own_pool(ns, GATES) as gates:
        assert await gates.fetchval("SELECT current_user") == "lockstep_svc_gates"
        refused = [
            f'SELECT count(*) FROM "{artifacts_schema}".artifacts',
            f"""INSERT INTO "{artifacts_schema}".rejections (purl, code, reason, event_id)
                VALUES ('pkg:x', 'f', 'forged', 'e-2')""",
            f'DELETE FROM "{artifacts_schema}".inbox',
            f'CREATE TABLE "{artifacts_schema}".planted (x int)',
            f'DROP SCHEMA "{artifacts_schema}" CASCADE',
            "CREATE TABLE public.planted (x int)",
            "CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
            "CREATE TEMPORARY TABLE planted (x int)",
        ]
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await gates.execute(statement)
    async with ns.connect("artifacts") as admin:  # nothing got in
        assert await admin.fetchval("SELECT count(*) FROM rejections") == 0
        assert await admin.fetchval("SELECT to_regclass('public.planted')") is None


async def test_a_service_refuses_a_schema_another_role_owns(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    taken = ns.settings.db_schema("artifacts")
    async with own_pool(ns, GATES):
        pass
    # The gates role may create schemas (it made its own), so it can take another's name
    # before that service ever ran: the artifacts service must then refuse to start on it.
    gates_dsn = ns.settings.pg_dsn_for("gates")
    conn = await asyncpg.connect(gates_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{taken}"')
    finally:
        await conn.close()
    with pytest.raises(SchemaNotOurs, match=f"{taken} belongs to the role lockstep_svc_gates"):
        await create_pool(ns.settings.pg_dsn_for("artifacts"), taken)


async def test_a_running_service_and_its_relay_log_in_as_its_role_and_the_cli_reads_as_admin(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    require_roles(ns.settings)
    service = unique_service()
    async with ns.service(ARTIFACTS) as running:
        assert running.pool is not None
        assert await running.pool.fetchval("SELECT current_user") == "lockstep_svc_artifacts"
        await ns.publish(
            ArtifactPackaged.build(
                service=service, version="1.0.0", digest=digest(service), commit="c0ffee1"
            )
        )
        # what the handler wrote (as the role) the relay published (as the role)
        await ns.log.wait_for(
            lambda: [e for e in ns.log.events(ArtifactPublished) if e.partition_key() == service]
        )
        async with ns.connect("artifacts") as admin:
            listeners = await admin.fetch(
                """SELECT usename FROM pg_stat_activity
                    WHERE datname = current_database() AND query LIKE 'LISTEN %'
                      AND query LIKE $1""",
                f"%{ns.settings.db_schema('artifacts')}%",
            )
        assert [r["usename"] for r in listeners] == ["lockstep_svc_artifacts"]
    async with open_artifacts(ns.settings) as artifacts:  # the CLI: the administrator
        shown = await artifacts.show(service, "1.0.0")
    assert shown is not None and shown.digest == digest(service)
    async with read_only_connection(ns.settings, "artifacts") as conn:
        assert await conn.fetchval("SELECT current_user") == "lockstep"


async def test_a_service_without_a_role_says_it_runs_as_the_administrator(
    new_namespace: NamespaceFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ns = await new_namespace()
    name = "norole" + uuid.uuid4().hex[:6]
    caplog.set_level(logging.INFO, logger="shared.service")
    async with ns.service(ServiceSpec(name, Router()), consume=False, relay=False) as running:
        assert running.pool is not None
        assert await running.pool.fetchval("SELECT current_user") == "lockstep"
    said = [r.getMessage() for r in caplog.records if r.name == "shared.service"]
    warned = [m for m in said if "runs with the administrator's rights" in m]
    assert warned and f"LOCKSTEP_PG_DSN_{name.upper()}" in warned[0]
    assert not [m for m in said if ":lockstep@" in m or "password" in m]


async def test_the_administrator_drops_what_the_roles_own(new_namespace: NamespaceFactory) -> None:
    # conftest's clean-up: the administrator drops a namespace's schemas, whoever owns them
    ns = await new_namespace()
    async with own_pool(ns, ARTIFACTS), own_pool(ns, GATES):
        pass
    await drop_namespace_schemas(ns.settings)
    conn = await asyncpg.connect(ns.settings.pg_dsn)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE left(nspname, length($1)) = $1",
            ns.settings.namespace + "_",
        )
    finally:
        await conn.close()
    assert left == 0


async def test_up_made_a_role_for_every_service_of_the_mesh_that_logs_in(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    path = ns.settings.credentials_dir / PG_CREDENTIALS_FILE
    require_roles(ns.settings)
    assert path.stat().st_mode & 0o077 == 0  # the passwords: the owner's only
    found = read_credentials(path)
    assert set(SERVICES) <= found.keys()  # what `lockstep run` finds, `up` found
    for service in SERVICES:
        conn = await asyncpg.connect(ns.settings.pg_dsn_for(service))
        try:
            assert await conn.fetchval("SELECT current_user") == f"lockstep_svc_{service}"
            assert (
                await conn.fetchval(
                    "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
                )
                is False
            )
        finally:
            await conn.close()
