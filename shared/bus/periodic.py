"""A service's periodic turn: work that time, not an event, makes due (a deployment window
opening). It runs like a handler — one transaction, events through the outbox — every few
seconds, or at once when ``turn`` is called (tests move a clock and call it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from opentelemetry.trace import Tracer

from shared.bus.direct import in_transaction
from shared.bus.handlers import HandlerContext
from shared.bus.signing import KeySource
from shared.clock import Clock
from shared.db import is_transient
from shared.settings import Settings

log = logging.getLogger(__name__)

Periodic = Callable[[HandlerContext], Awaitable[None]]


class PeriodicRunner:
    def __init__(
        self,
        fn: Periodic,
        *,
        service: str,
        pool: asyncpg.Pool,
        settings: Settings,
        tracer: Tracer,
        clock: Clock,
        every_s: float,
        signing_key: KeySource | None = None,
    ) -> None:
        self._fn = fn
        self._service = service
        self._pool = pool
        self._settings = settings
        self._tracer = tracer
        self._clock = clock
        self._every_s = every_s
        self._lock = asyncio.Lock()
        self._signing_key = signing_key

    async def turn(self) -> None:
        """One turn, in one transaction. Spans are the turn's own to start (most turns have
        nothing to do and tell no story)."""
        async with self._lock:
            await in_transaction(
                self._pool, self._settings, self._service, self._fn,
                tracer=self._tracer, span=None, clock=self._clock,
                signing_key=self._signing_key,
            )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._every_s)
            if stop.is_set():
                return
            try:
                await self.turn()
            except Exception as exc:  # the next turn tries again; a bug is logged loudly
                transient = is_transient(exc)
                log.log(
                    logging.WARNING if transient else logging.ERROR,
                    "%s: periodic turn failed: %r", self._service, exc, exc_info=not transient,
                )  # fmt: skip
