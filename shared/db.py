"""Postgres: a pool per service, pinned to the service's own schema, and its migrations.

Each service owns one schema (``<namespace>_<service>``) and never reads another's: it logs in
as a role of its own (``Settings.pg_dsn_for``), which owns that schema and has no rights on any
other, nor on ``public``; the administrator (``Settings.pg_dsn``) is a member of every such
role and reads them all. Migrations are plain numbered ``.sql`` files applied in order, once,
under an advisory lock so that several instances starting together do not race.

``until_up`` is how a service waits at start-up for what it stands on (Postgres here, Kafka in
the bus): tried again, with a capped backoff, for as long as the error says "not now", until
the service is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TypeVar

import asyncpg

from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATE classes that say "not now", never "not this record": connection exceptions (08),
# transaction rollbacks such as deadlocks and serialization failures (40), insufficient
# resources (53), operator intervention such as a shutdown (57), system errors (58); and a
# read-only transaction during a fail-over (25006).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
TRANSIENT_SQLSTATES = frozenset({"25006"})


def is_transient(exc: BaseException) -> bool:
    """The database is away, or chose this transaction as a victim: retry, never give up on
    the record for it."""
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        # asyncpg's InternalClientError: its state machine, confused by a connection that
        # died mid-operation
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    return False


def is_not_up_yet(exc: BaseException) -> bool:
    """At start-up: Postgres is not there yet (``is_transient``), not an error in what we
    ask of it. A bad DSN option, a certificate that does not verify or a file that is missing
    or unreadable (a certificate, a socket directory's permissions) will not mend by waiting."""
    if isinstance(
        exc,
        asyncpg.ClientConfigurationError
        | ssl.SSLCertVerificationError
        | FileNotFoundError
        | PermissionError,
    ):
        return False
    return is_transient(exc)


# The waits of ``until_up``: the first, doubling to the longest.
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 5.0


class NotComingUp(RuntimeError):
    """What a service stands on answered, but with an error that waiting will not mend (a
    wrong password, a database that does not exist, a migration that fails)."""


def pg_where(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages (never its user or password)."""
    return dsn.rsplit("@", 1)[-1].split("?", 1)[0]


def short_reason(exc: BaseException) -> str:
    """The error's class, and what it says when that is short (for one-line warnings)."""
    said = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {said}" if said and len(said) <= 60 else type(exc).__name__


async def until_up(
    attempt: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    who: str,
    what: str,
    transient: Callable[[BaseException], bool] = is_not_up_yet,
    first_s: float = FIRST_WAIT_S,
    longest_s: float = LONGEST_WAIT_S,
    logger: logging.Logger = log,
) -> T | None:
    """``attempt()``'s result, tried again while it fails with an error ``transient`` calls
    "not now" (Postgres's ``is_not_up_yet`` by default), waiting ``first_s`` then twice as long
    each time up to ``longest_s``, for as long as it takes: an operator's service comes up when
    the infrastructure does. Each failed try is one warning, e.g. ``artifacts: Kafka at
    127.0.0.1:9092 not reachable (KafkaConnectionError); trying again in 2.0s``.

    None once ``stop`` is set, at once (a try in flight is cancelled: ``attempt`` must release
    what it holds when cancelled). Any other error gives up: ``NotComingUp``, naming ``who``
    and ``what``, from the error."""
    wait_s = first_s
    tries = 0
    while not stop.is_set():
        tries += 1
        trying = asyncio.ensure_future(attempt())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({trying, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not trying.done():  # told to stop (or cancelled ourselves): end the try
                trying.cancel()
                with contextlib.suppress(BaseException):
                    await trying
        if trying.cancelled():
            return None
        exc = trying.exception()
        if exc is None:
            if tries > 1:
                logger.info("%s: %s reachable (after %d tries)", who, what, tries)
            return trying.result()
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: not ours to wrap
        if not transient(exc):
            raise NotComingUp(f"{who}: {what} refused: {type(exc).__name__}: {exc}") from exc
        logger.warning(
            "%s: %s not reachable (%s); trying again in %.1fs", who, what, short_reason(exc), wait_s
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
        wait_s = min(wait_s * 2, longest_s)
    return None


@dataclass(frozen=True)
class MigrationSet:
    """Numbered SQL files of one component, e.g. ``bus`` from ``shared/migrations``."""

    component: str
    package: str  # a package with a ``migrations/`` folder of ``NNN_name.sql`` files

    def files(self) -> list[Traversable]:
        folder = resources.files(self.package) / "migrations"
        return sorted(
            (f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
        )


BUS_MIGRATIONS = MigrationSet("bus", "shared")


def _lock_key(name: str) -> int:
    """A Postgres advisory lock key (signed 64 bits) for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 5
) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` first. Creates the schema if needed (owned by
    the DSN's user); refuses, with ``SchemaNotOurs``, a schema whose owner's rights the user
    does not have (another service's role took the name, or the administrator made it before
    roles existed)."""
    conn = await asyncpg.connect(dsn)
    try:
        # CREATE SCHEMA IF NOT EXISTS is not safe against itself: two processes starting at
        # once can both miss the schema and one then fails on pg_namespace's unique index.
        # A lock on the schema's name makes the second wait and find it.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(f"schema:{schema}"))
            owner = await _schema_owner(conn, schema)
            if owner is None:  # only then: a role may own its schema yet lack CREATE on the db
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            elif not owner[1]:
                user = await conn.fetchval("SELECT current_user")
                raise SchemaNotOurs(
                    f"the schema {schema} belongs to the role {owner[0]}, and {user} (whom "
                    "this service logs in as) has no rights on it: `infra/lockstep-infra up` "
                    "hands an installation's schemas to their services' roles, or as its "
                    f'owner run ALTER SCHEMA "{schema}" OWNER TO "{user}" (and its tables)'
                )
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": schema},
    )
    assert pool is not None
    return pool


class SchemaNotOurs(RuntimeError):
    """A service's schema is owned by a role whose rights its login does not have."""


async def _schema_owner(conn: asyncpg.Connection, schema: str) -> tuple[str, bool] | None:
    """The schema's owner, and whether the current user has that owner's rights; None if
    there is no such schema."""
    row = await conn.fetchrow(
        """SELECT nspowner::regrole::text AS owner,
                  pg_has_role(current_user, nspowner, 'USAGE') AS ours
             FROM pg_namespace WHERE nspname = $1""",
        schema,
    )
    return None if row is None else (row["owner"], row["ours"])


@asynccontextmanager
async def read_only_connection(
    settings: Settings, service: str
) -> AsyncIterator[asyncpg.Connection]:
    """One connection on ``service``'s own schema, for reading (its transactions are
    read-only), as the administrator (``pg_dsn``, a member of every service's role): the
    CLI reads any service. Applies no migrations and creates nothing: reading never shapes
    the schema. Where the service has never run, its tables are missing
    (``asyncpg.UndefinedTableError`` on a query), which the reader takes as "nothing there"."""
    conn = await asyncpg.connect(
        settings.pg_dsn,
        server_settings={
            "search_path": settings.db_schema(service),
            "default_transaction_read_only": "on",
        },
    )
    try:
        yield conn
    finally:
        await conn.close()


async def migrate(pool: asyncpg.Pool, schema: str, sets: list[MigrationSet]) -> list[str]:
    """Apply what is not applied yet; returns the files applied now."""
    applied_now: list[str] = []
    lock_key = _lock_key(f"migrate:{schema}")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, name))"""
        )
        done = {
            (r["component"], r["name"])
            for r in await conn.fetch("SELECT component, name FROM schema_migrations")
        }
        for mset in sets:
            for f in mset.files():
                if (mset.component, f.name) in done:
                    continue
                await conn.execute(f.read_text(encoding="utf-8"))
                await conn.execute(
                    "INSERT INTO schema_migrations (component, name) VALUES ($1, $2)",
                    mset.component,
                    f.name,
                )
                applied_now.append(f"{mset.component}/{f.name}")
    return applied_now


async def drop_namespace_schemas(settings: Settings) -> None:
    """Drop every Postgres schema of the namespace (test and bench clean-up; never the
    default namespace)."""
    if settings.namespace == "lockstep":
        raise ValueError("refusing to drop the default namespace's schemas")
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        prefix = settings.namespace + "_"
        rows = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE left(nspname, length($1)) = $1", prefix
        )
        for row in rows:
            await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
    finally:
        await conn.close()
