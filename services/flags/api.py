"""The flags service's public face: what others (the command line, the demo, a console) may
read and do. Changes go through the same code as the admin API and Kafka requests (one
transaction: the new version, its history row, and ``flag.changed`` in the service's outbox,
which the running service publishes).

    async with open_flags(settings, tracer=tracer) as flags:
        await flags.apply(Change("prod-eu", "new-cart", "enable", "ann", "go", "cli"))
        found = await flags.listed("prod-eu")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Tracer

from events.flags import ChangeSource, FlagChanged
from services.flags import changes, flag_sets, keys, store
from services.flags.changes import Change, ChangeRefused, UnknownFlag
from services.flags.definitions import DefinitionError, SchemaMissing
from services.flags.rollouts import ScheduleError, Step, parse_schedule
from services.flags.rollouts import describe as describe_schedule
from services.flags.stale import StaleFlag, stale_flags
from services.flags.store import ChangeRow, Rollout, StoredFlag
from shared.service import service_pool
from shared.settings import Settings

__all__ = [
    "ApiKeyInfo",
    "Change",
    "ChangeRefused",
    "ChangeRow",
    "DefinitionError",
    "FlagDetail",
    "Flags",
    "Rollout",
    "ScheduleError",
    "SchemaMissing",
    "StaleFlag",
    "Step",
    "StoredFlag",
    "UnknownFlag",
    "describe_schedule",
    "open_flags",
    "parse_schedule",
]


@dataclass(frozen=True)
class FlagDetail:
    """One flag of an environment: its definition (None: deleted), its active rollout, and
    its history, newest first."""

    flag: StoredFlag | None
    rollout: Rollout | None
    history: list[ChangeRow]


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as listed: never the key itself (only its sha256 is kept)."""

    prefix: str
    environment: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class Flags:
    """The flags service's read models and commands, on a small pool of its own schema."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, tracer: Tracer) -> None:
        self._pool = pool
        self._settings = settings
        self._tracer = tracer

    # --- commands --------------------------------------------------------------------------

    async def apply(self, change: Change) -> FlagChanged | None:
        """Make one change (set, enable, disable, rollout, halt-rollout). None: nothing to
        change. Raises UnknownFlag, ChangeRefused, DefinitionError or SchemaMissing."""
        return await changes.apply_now(self._pool, self._settings, change, tracer=self._tracer)

    async def import_flag_set(
        self,
        environment: str,
        document: dict[str, Any],
        *,
        by: str,
        reason: str,
        source: ChangeSource = "cli",
    ) -> list[FlagChanged]:
        """Load a flagd flag set into ``environment`` (its ``$evaluators``, metadata and
        flags); flags the document leaves out are kept. Returns the changes made."""
        return await changes.import_flag_set(
            self._pool, self._settings, environment, document, by=by, reason=reason,
            source=source, tracer=self._tracer,
        )  # fmt: skip

    async def create_key(self, environment: str, role: str, name: str) -> str:
        """A new API key (``evaluate`` for one environment, or ``admin``; ``*``: every one).
        The key is returned once; ValueError if role and environment do not fit."""
        async with self._pool.acquire() as conn:
            return await keys.create(conn, environment, role, name, datetime.now(UTC))

    async def revoke_key(self, prefix: str) -> int:
        """Revoke the active key(s) with ``prefix``; how many were revoked."""
        async with self._pool.acquire() as conn:
            return await keys.revoke(conn, prefix, datetime.now(UTC))

    # --- read models -----------------------------------------------------------------------

    async def listed(self, environment: str | None = None) -> list[StoredFlag]:
        """Every flag (of one environment, or all)."""
        async with self._pool.acquire() as conn:
            return await store.flags_of(conn, environment)

    async def active_rollouts(self, environment: str | None = None) -> list[Rollout]:
        async with self._pool.acquire() as conn:
            return await store.active_rollouts(conn, environment)

    async def show(self, environment: str, key: str) -> FlagDetail:
        async with self._pool.acquire() as conn:
            return FlagDetail(
                flag=await store.get_flag(conn, environment, key),
                rollout=await store.active_rollout(conn, environment, key),
                history=await store.history(conn, environment, key),
            )

    async def export(self, environment: str) -> dict[str, Any]:
        """The environment's flags as one flagd flag set (flagd loads it unchanged)."""
        async with self._pool.acquire() as conn:
            document, _ = await flag_sets.document(conn, environment)
        return document

    async def stale(
        self, environment: str | None, grace: timedelta, now: datetime | None = None
    ) -> list[StaleFlag]:
        """Flags to remove: past their type's lifetime, fully rolled out, or never
        evaluated (``grace``: how long a new flag may go unevaluated)."""
        async with self._pool.acquire() as conn:
            flags = await store.flags_of(conn, environment)
            finished = {
                (f.environment, f.key)
                for f in flags
                if await store.finished_rollout(conn, f.environment, f.key)
            }
            evaluated = await store.last_evaluations(conn)
        return stale_flags(flags, evaluated, finished, now or datetime.now(UTC), grace)

    async def keys(self) -> list[ApiKeyInfo]:
        """Every key by prefix, oldest first."""
        async with self._pool.acquire() as conn:
            rows = await keys.listed(conn)
        return [
            ApiKeyInfo(
                prefix=r["key_prefix"],
                environment=r["environment"],
                role=r["role"],
                name=r["name"],
                created_at=r["created_at"],
                revoked_at=r["revoked_at"],
            )
            for r in rows
        ]


@asynccontextmanager
async def open_flags(settings: Settings, *, tracer: Tracer | None = None) -> AsyncIterator[Flags]:
    """The flags service's schema, migrated first if the service has never run (its own
    migrations, as ``lockstep run flags`` applies them). ``tracer``: whose spans the changes
    are (default: none kept)."""
    from services.flags.app import SPEC  # the service's assembly names its migrations

    async with service_pool(SPEC, settings, max_size=2) as pool:
        yield Flags(pool, settings, tracer or trace.get_tracer("lockstep.flags.api"))
