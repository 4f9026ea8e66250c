"""The flag sets the HTTP edge evaluates, kept current: loaded on first use, reloaded when a
committed change is announced (LISTEN on the flags channel), and checked against the
stored revisions every few seconds in case an announcement was missed (a reconnect)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from services.flags import store
from services.flags.evaluator import FlagSet
from services.flags.flag_sets import document
from shared.db import is_transient

log = logging.getLogger(__name__)


class LiveFlagSets:
    def __init__(self, pool: asyncpg.Pool, dsn: str, schema: str, check_every_s: float = 5.0):
        self._pool = pool
        self._dsn = dsn
        self._schema = schema
        self._check_every_s = check_every_s
        self._sets: dict[str, FlagSet] = {}
        self._listener: asyncpg.Connection | None = None
        self._reloading: set[asyncio.Task[FlagSet]] = set()

    def get(self, environment: str) -> FlagSet | None:
        """The environment's flags as last loaded (None: not loaded yet)."""
        return self._sets.get(environment)

    async def load(self, environment: str) -> FlagSet:
        async with self._pool.acquire() as conn:
            doc, revision = await document(conn, environment)
        loaded = FlagSet(doc, revision)
        current = self._sets.get(environment)
        if current is None or current.version <= revision:
            self._sets[environment] = loaded
        return self._sets[environment]

    async def get_or_load(self, environment: str) -> FlagSet:
        found = self._sets.get(environment)
        return found if found is not None else await self.load(environment)

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and check until ``stop``. Postgres away (refusing connections, starting up,
        or dropping one mid-transaction, which asyncpg reports as an ``InterfaceError`` from
        ``Transaction.__aexit__``) is a warning and the next check tries again; the flag sets
        already loaded are served meanwhile."""
        while not stop.is_set():
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                await self._check_revisions()
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, asyncpg.PostgresError)):
                    raise
                log.warning("flags: could not check flag revisions: %r", exc)
                await self._drop_listener()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._check_every_s)
        await self._drop_listener()

    async def _listen(self) -> None:
        await self._drop_listener()
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.add_listener(store.channel(self._schema), self._announced)
        except BaseException:
            conn.terminate()
            raise
        self._listener = conn

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), 2)
            if not listener.is_closed():
                listener.terminate()

    def _announced(self, _conn: object, _pid: int, _channel: str, environment: str) -> None:
        if environment in self._sets:
            task = asyncio.get_running_loop().create_task(self.load(environment))
            self._reloading.add(task)
            task.add_done_callback(self._reloaded)

    def _reloaded(self, task: asyncio.Task[FlagSet]) -> None:
        """A reload on announcement that failed is told (the next check loads it again)."""
        self._reloading.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("flags: could not reload an announced flag set: %r", exc)

    async def _check_revisions(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT environment, revision FROM environments")
        for row in rows:
            current = self._sets.get(row["environment"])
            if current is not None and current.version < row["revision"]:
                await self.load(row["environment"])
