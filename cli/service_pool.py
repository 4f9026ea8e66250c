"""Commands that act as a service does (flags, incidents) work on that service's schema,
migrated first if the service has never run, with the login of whoever runs them."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from opentelemetry.trace import Tracer

from shared.settings import Settings

T = TypeVar("T")


class Unreachable(Exception):
    pass


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def with_service_pool(service: str, work: Callable[[asyncpg.Pool, Settings], Awaitable[T]]) -> T:
    """Run ``work`` with a small pool on ``service``'s schema (Unreachable if Postgres is not)."""
    from services.catalog import spec
    from shared.db import BUS_MIGRATIONS, create_pool, migrate

    settings = Settings()
    migrations = spec(service).migrations

    async def go() -> T:
        schema = settings.db_schema(service)
        pool = await create_pool(settings.pg_dsn, schema, max_size=2)
        try:
            await migrate(pool, schema, [BUS_MIGRATIONS, *migrations])
            return await work(pool, settings)
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except (OSError, asyncpg.PostgresError) as exc:
        where = settings.pg_dsn.split("@")[-1]
        raise Unreachable(f"cannot reach Postgres at {where}: {exc}") from None


def traced(
    service: str, work: Callable[[asyncpg.Pool, Settings, Tracer], Awaitable[T]]
) -> Callable[[asyncpg.Pool, Settings], Awaitable[T]]:
    """``work`` with a tracer of the command line's own for ``service`` (``<service>-cli``),
    its spans flushed when the work is done."""
    from shared.telemetry import tracer, tracer_provider

    async def run(pool: asyncpg.Pool, settings: Settings) -> T:
        provider = tracer_provider(settings, f"{service}-cli")
        try:
            return await work(pool, settings, tracer(provider))
        finally:
            provider.shutdown()

    return run
