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

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

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
BatchHandler = Callable[[list["Item[Any]"]], Awaitable[None]]
E = TypeVar("E", bound=CDEvent)
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
    # What the handlers of one transaction share (the model in force, read once per batch).
    memo: dict[str, Any] = field(default_factory=dict)
    _threads: dict[str, Thread] = field(default_factory=dict, init=False, repr=False)

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make this event's span the current one (a batch handler's work for one item: what
        it emits then carries that span, and continues that event's trace)."""
        with trace.use_span(self.span, end_on_exit=False):
            yield

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


@dataclass(frozen=True)
class Registration:
    """How a service handles a set of event types: the coroutine, whether it takes the events
    one at a time or a batch at once, and the advisory locks the runtime takes for each event
    before any handler of the batch runs (``locks``: the subject keys, e.g. ``build:x@1``;
    ``shared``: keys held shared, taken first, e.g. the release model in force)."""

    fn: Any
    batch: bool = False
    locks: Callable[[Any], Iterable[str]] | None = None
    shared: tuple[str, ...] = ()


@dataclass
class Item(Generic[E]):
    """One event of a batch, with the context of its own: its span, its record, its emits."""

    event: E
    ctx: HandlerContext


class Router:
    """Maps event types to handlers. One handler per type; unknown types are not this service's.

    A handler takes one event (``handles``) or a batch (``handles_batch``: ``async def
    on_x(items: list[Item[X]]) -> None``, each ``Item`` an event with its own context, its
    span and its emits; ``ctx.conn`` is the batch's one transaction). A batch is a run of
    consecutive events of one partition (several partitions' runs together) for the same
    handler, so the order of each key holds. The runtime claims the batch's inbox rows, takes
    every declared lock in one statement (``shared`` ones first, then ``locks``, each in
    sorted order, keyed ``<schema>:<key>`` as ``pg_advisory_xact_lock`` takes them by hand),
    then calls the handlers; if any fails, the batch is undone and each event is handled
    alone (with retries, then the dead-letter topic), so a poison event stops only itself."""

    def __init__(self) -> None:
        self._handlers: dict[type[CDEvent], Registration] = {}

    def _register(self, models: tuple[type[CDEvent], ...], registration: Registration) -> None:
        for model in models:
            if model in self._handlers:
                raise ValueError(f"{model.TYPE} already has a handler")
            self._handlers[model] = registration

    def handles(
        self,
        *models: type[CDEvent],
        locks: Callable[[Any], Iterable[str]] | None = None,
        shared: tuple[str, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self._register(models, Registration(fn, False, locks, shared))
            return fn

        return register

    def handles_batch(
        self,
        *models: type[CDEvent],
        locks: Callable[[Any], Iterable[str]] | None = None,
        shared: tuple[str, ...] = (),
    ) -> Callable[[BatchHandler], BatchHandler]:
        def register(fn: BatchHandler) -> BatchHandler:
            self._register(models, Registration(fn, True, locks, shared))
            return fn

        return register

    def registration_for(self, event: CDEvent) -> Registration | None:
        return self._handlers.get(type(event))

    def handler_for(self, event: CDEvent) -> Handler | None:
        """The per-event handler of ``event``'s type (None: none, or a batch handler)."""
        found = self._handlers.get(type(event))
        return found.fn if found is not None and not found.batch else None

    def handles_type(self, model: type[CDEvent]) -> bool:
        return model in self._handlers

    @property
    def topics(self) -> set[str]:
        """The logical topics this service must read."""
        return {model.TOPIC for model in self._handlers}

    @property
    def event_types(self) -> list[str]:
        return [model.TYPE for model in self._handlers]


async def take_locks(
    conn: asyncpg.Connection, handling: Sequence[tuple[Registration, CDEvent]]
) -> None:
    """Every advisory lock the registrations declare for their events, in one statement: the
    shared ones first, then the others, each in sorted order (so two batches never wait on
    each other in a circle)."""
    shared: set[str] = set()
    alone: set[str] = set()
    for registration, event in handling:
        shared.update(registration.shared)
        if registration.locks is not None:
            alone.update(registration.locks(event))
    if not shared and not alone:
        return
    ordered = sorted(shared) + sorted(alone - shared)
    await conn.execute(
        """SELECT count(CASE WHEN l.shared THEN pg_advisory_xact_lock_shared(l.h)
                             ELSE pg_advisory_xact_lock(l.h) END)
             FROM (SELECT k.shared, hashtextextended(current_schema() || ':' || k.key, 0) AS h
                     FROM unnest($1::text[], $2::bool[]) WITH ORDINALITY AS k(key, shared, n)
                    ORDER BY k.n) l""",
        ordered,
        [key in shared for key in ordered],
    )


async def handle(router: Router, event: CDEvent, ctx: HandlerContext) -> None:
    """Handle one event in ``ctx``'s transaction as the bus would, its declared locks first
    (for work that drives a handler by hand: a test, a replay)."""
    registration = router.registration_for(event)
    if registration is None:
        raise ValueError(f"{event.context.type} has no handler here")
    await take_locks(ctx.conn, [(registration, event)])
    if registration.batch:
        await registration.fn([Item(event, ctx)])
    else:
        await registration.fn(event, ctx)


# --- trace threads of a batch: what ``remember``, ``remember_link`` and ``recall`` do, for
# many items in one round trip each ---------------------------------------------------------


async def remember_all(remembered: Sequence[tuple[HandlerContext, str]]) -> None:
    """``ctx.remember(key)`` for each (ctx, key), each with its ctx's own span; one round
    trip. A key remembered twice keeps the later one's."""
    found: dict[str, tuple[str, str | None]] = {}
    for ctx, key in remembered:
        with ctx.current():
            headers = current_trace_headers()
        if headers.get("traceparent"):
            found[key] = (headers["traceparent"], headers.get("tracestate"))
            ctx._threads.pop(key, None)
    if not found:
        return
    conn = remembered[0][0].conn
    await conn.execute(
        """INSERT INTO trace_threads (key, traceparent, tracestate)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
           ON CONFLICT (key) DO UPDATE SET traceparent = EXCLUDED.traceparent,
               tracestate = EXCLUDED.tracestate, updated_at = now()""",
        list(found), [tp for tp, _ in found.values()], [ts for _, ts in found.values()],
    )  # fmt: skip


async def remember_links(linked: Sequence[tuple[HandlerContext, str]]) -> None:
    """``ctx.remember_link(key)`` for each (ctx, key): the span that sent each ctx's event,
    kept once per key, in the order they came; one round trip."""
    per_key: dict[str, list[str]] = {}
    for ctx, key in linked:
        tp = ctx.record.header("traceparent") if ctx.record is not None else None
        if tp and tp not in per_key.setdefault(key, []):
            per_key[key].append(tp)
            ctx._threads.pop(key, None)
    keys = [k for k, tps in per_key.items() if tps]
    if not keys:
        return
    conn = linked[0][0].conn
    await conn.execute(
        """INSERT INTO trace_threads (key, links)
           SELECT t.key, array_agg(t.tp ORDER BY t.n)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(key, tp, n)
            GROUP BY t.key
           ON CONFLICT (key) DO UPDATE
           SET links = trace_threads.links || ARRAY(
                   SELECT x FROM unnest(EXCLUDED.links) WITH ORDINALITY AS l(x, n)
                    WHERE NOT x = ANY(trace_threads.links) ORDER BY n),
               updated_at = now()""",
        [k for k in keys for _ in per_key[k]], [tp for k in keys for tp in per_key[k]],
    )  # fmt: skip


async def recall_all(contexts: Sequence[HandlerContext], *keys: str) -> dict[str, Thread]:
    """The threads of ``keys`` read in one round trip, and known to each of ``contexts``
    (their ``continuing`` reads them there)."""
    wanted = list(dict.fromkeys(keys))
    if not wanted or not contexts:
        return {}
    rows = await contexts[0].conn.fetch(
        "SELECT key, traceparent, tracestate, links FROM trace_threads WHERE key = ANY($1::text[])",
        wanted,
    )
    found = {r["key"]: Thread(r["traceparent"], r["tracestate"], tuple(r["links"])) for r in rows}
    threads = {k: found.get(k, NO_THREAD) for k in wanted}
    for ctx in contexts:
        ctx._threads.update(threads)
    return threads
