"""What a service declares: which event types it handles, and with which coroutine.

A handler is ``async def on_x(event: X, ctx: HandlerContext) -> None``. It runs inside the
transaction that also records the event in the inbox; ``ctx.conn`` is that transaction's
connection and ``ctx.emit`` adds an event to the outbox of the same transaction.

Work about a subject that something else sets off later (a soak running out, a window opening,
a person's approval) belongs to the subject's trace. The runtime keeps, per subject key (e.g.
``checkout@1.4.2``), the span that work continues and the spans it links to (its trace
thread, table ``trace_threads`` of the bus): ``ctx.remember(key)`` keeps the current span,
``ctx.remember_link(key)`` the span that sent the event being handled, and
``async with ctx.continuing(key, name):`` runs its body in a span of the remembered trace,
linked to the span that set it off. A service keeps no traceparents of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer
from opentelemetry.util.types import AttributeValue

from events import CDEvent, KafkaRecord
from shared.bus.signing import KeySource, signed_record
from shared.clock import Clock, system_clock
from shared.settings import Settings
from shared.telemetry import context_from_headers, current_trace_headers

Handler = Callable[[Any, "HandlerContext"], Awaitable[None]]
Attributes = Mapping[str, AttributeValue]


@dataclass(frozen=True)
class Thread:
    """What the runtime remembers of a subject's trace: the span later work about it
    continues (None: none) and the spans that work links to, in the order they came."""

    traceparent: str | None = None
    tracestate: str | None = None
    links: tuple[str, ...] = ()

    def span_links(self) -> list[Link]:
        """``links`` as span links (any that do not parse are left out)."""
        found = []
        for tp in self.links:
            context = trace.get_current_span(context_from_headers({"traceparent": tp}))
            if context.get_span_context().is_valid:
                found.append(Link(context.get_span_context()))
        return found


NO_THREAD = Thread()


@contextmanager
def continued_span(
    tracer: Tracer | None, thread: Thread, name: str, attributes: Attributes
) -> Iterator[Span | None]:
    """The span work of ``thread``'s subject runs in, current meanwhile: a new span ``name``
    of the remembered trace, linked to the current span, when the current span is of another
    trace; a new trace of its own with neither a current span nor anything remembered; None
    (no span of its own: the current one goes on) when the current span is in the remembered
    trace already, when nothing is remembered but a span is current, and without a tracer."""
    here = trace.get_current_span().get_span_context()
    headers = {"traceparent": thread.traceparent or "", "tracestate": thread.tracestate or ""}
    parent = context_from_headers(headers)
    theirs = trace.get_current_span(parent).get_span_context()
    same = theirs.is_valid and theirs.trace_id == here.trace_id
    if tracer is None or same or (here.is_valid and not theirs.is_valid):
        yield None
        return
    links = [Link(here)] if here.is_valid else []
    with tracer.start_as_current_span(
        name, context=parent, links=links, attributes=attributes
    ) as span:
        yield span


@dataclass
class HandlerContext:
    conn: asyncpg.Connection
    settings: Settings
    record: KafkaRecord | None  # None on a periodic turn
    span: Span
    clock: Clock = system_clock
    tracer: Tracer | None = None  # for spans of a handler's own (a periodic turn)
    signing_key: KeySource | None = None  # the service's, if it makes decisions
    emitted: list[KafkaRecord] = field(default_factory=list)
    _threads: dict[str, Thread] = field(default_factory=dict, init=False, repr=False)

    def now(self) -> datetime:
        return self.clock()

    async def remember(self, key: str) -> None:
        """Keep the current span as the one later work about ``key`` continues (replacing
        what was kept; its links stay). Outside any span there is nothing to keep, and what
        was kept stays."""
        headers = current_trace_headers()
        if not headers.get("traceparent"):
            return
        await self.conn.execute(
            """INSERT INTO trace_threads (key, traceparent, tracestate) VALUES ($1, $2, $3)
               ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent,
                   tracestate = EXCLUDED.tracestate, updated_at = now()""",
            key, headers.get("traceparent"), headers.get("tracestate"),
        )  # fmt: skip
        self._threads.pop(key, None)

    async def remember_link(self, key: str, traceparent: str | None = None) -> None:
        """Add a span for later work about ``key`` to link to (fan-in): ``traceparent``, by
        default the span that sent the event being handled. Each span is kept once."""
        if traceparent is None and self.record is not None:
            traceparent = self.record.header("traceparent")
        if not traceparent:
            return
        await self.conn.execute(
            """INSERT INTO trace_threads (key, links) VALUES ($1, ARRAY[$2::text])
               ON CONFLICT (key) DO UPDATE
               SET links = trace_threads.links || $2::text, updated_at = now()
               WHERE NOT $2::text = ANY(trace_threads.links)""",
            key, traceparent,
        )  # fmt: skip
        self._threads.pop(key, None)

    async def recall(self, *keys: str) -> dict[str, Thread]:
        """The threads of ``keys`` (``NO_THREAD`` for a key with none), read in one round
        trip and kept for the rest of this context (``continuing`` reads them there)."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._threads]
        if missing:
            rows = await self.conn.fetch(
                "SELECT key, traceparent, tracestate, links FROM trace_threads "
                "WHERE key = ANY($1::text[])",
                missing,
            )
            found = {
                r["key"]: Thread(r["traceparent"], r["tracestate"], tuple(r["links"])) for r in rows
            }
            for k in missing:
                self._threads[k] = found.get(k, NO_THREAD)
        return {k: self._threads[k] for k in keys}

    @asynccontextmanager
    async def continuing(
        self, key: str, name: str, attributes: Attributes | None = None
    ) -> AsyncIterator[Thread]:
        """Run the body as work of ``key``'s trace. When the current span is of another trace,
        the body runs in a new span ``name`` of the remembered one, linked to the current
        span, and ``ctx.span`` is that span meanwhile; events emitted inside carry it. With no
        current span and nothing remembered, the body runs in a new trace of its own. Yields
        the thread (its links, for a span that weighs several inputs)."""
        thread = (await self.recall(key))[key]
        with continued_span(self.tracer, thread, name, attributes or {}) as span:
            before = self.span
            self.span = span or before
            try:
                yield thread
            finally:
                self.span = before

    def emit(self, event: CDEvent) -> None:
        """Queue ``event`` for the outbox of this transaction (written if the handler succeeds),
        carrying the current span's context so the next service's span is its child. A
        decision (``events.signing.SIGNERS``) is signed with ``signing_key``; without one, or
        with a key of a role that may not sign it, ``UnsignableDecision`` is raised."""
        self.emitted.append(
            signed_record(
                event,
                topic=self.settings.topic(event.TOPIC),
                key=self.signing_key,
                trace_headers=current_trace_headers(),
            )
        )


class Router:
    """Maps event types to handlers. One handler per type; unknown types are not this service's."""

    def __init__(self) -> None:
        self._handlers: dict[type[CDEvent], Handler] = {}

    def handles(self, *models: type[CDEvent]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for model in models:
                if model in self._handlers:
                    raise ValueError(f"{model.TYPE} already has a handler")
                self._handlers[model] = fn
            return fn

        return register

    def handler_for(self, event: CDEvent) -> Handler | None:
        return self._handlers.get(type(event))

    def handles_type(self, model: type[CDEvent]) -> bool:
        return model in self._handlers

    @property
    def topics(self) -> set[str]:
        """The logical topics this service must read."""
        return {model.TOPIC for model in self._handlers}

    @property
    def event_types(self) -> list[str]:
        return [model.TYPE for model in self._handlers]
