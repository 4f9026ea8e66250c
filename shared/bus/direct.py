"""Work done outside a handler (a periodic turn, a command line, an HTTP request) the way a
handler does it:
one transaction, a ``HandlerContext`` whose events go to the outbox of the same transaction,
in a span of its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import TypeVar

import asyncpg
from opentelemetry.trace import INVALID_SPAN, Tracer

from shared.bus.handlers import HandlerContext
from shared.bus.outbox import write_and_wake
from shared.bus.signing import KeySource
from shared.clock import Clock, system_clock
from shared.settings import Settings

T = TypeVar("T")


async def in_transaction(
    pool: asyncpg.Pool,
    settings: Settings,
    service: str,
    work: Callable[[HandlerContext], Awaitable[T]],
    *,
    tracer: Tracer,
    span: str | None,
    clock: Clock = system_clock,
    signing_key: KeySource | None = None,
) -> T:
    """Run ``work`` in one transaction on ``service``'s schema; what it emits is written to
    that service's outbox in the same transaction (its relay publishes it). ``span`` names a
    span around it; None: none (``work`` starts its own where it has a story to tell).
    ``signing_key`` signs the decisions it emits (as ``HandlerContext.emit`` does)."""
    with (
        tracer.start_as_current_span(span) if span is not None else nullcontext(INVALID_SPAN)
    ) as current:
        async with pool.acquire() as conn, conn.transaction():
            ctx = HandlerContext(
                conn=conn, settings=settings, record=None, span=current, clock=clock,
                tracer=tracer, signing_key=signing_key,
            )  # fmt: skip
            result = await work(ctx)
            await write_and_wake(conn, ctx.emitted, settings.db_schema(service))
        return result
