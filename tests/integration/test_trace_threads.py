"""The runtime's trace threads on the real Postgres: what ``HandlerContext.remember``,
``.remember_link``, ``.recall`` and ``.continuing`` keep in and read from ``trace_threads``
(the bus's migrations applied to a throwaway schema, dropped afterwards). Which span the work
runs in is the unit tests' (tests/unit/test_trace_threads.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, Tracer

from events import GatePassed, KafkaRecord
from events.signing import KeyStore
from events.testing import sample
from shared.bus.handlers import NO_THREAD, HandlerContext, Thread
from shared.db import BUS_MIGRATIONS, create_pool, drop_namespace_schemas, migrate
from shared.settings import Settings
from shared.telemetry import current_trace_headers

pytestmark = pytest.mark.integration

ONE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TWO = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Counted:
    """A real connection that counts its round trips (``HandlerContext`` uses these three)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.trips = 0

    async def execute(self, *args: Any) -> str:
        self.trips += 1
        done: str = await self.conn.execute(*args)
        return done

    async def fetch(self, *args: Any) -> list[asyncpg.Record]:
        self.trips += 1
        rows: list[asyncpg.Record] = await self.conn.fetch(*args)
        return rows

    async def fetchrow(self, *args: Any) -> asyncpg.Record | None:
        self.trips += 1
        return await self.conn.fetchrow(*args)


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[asyncpg.Pool]:
    settings = Settings(namespace="it_" + uuid.uuid4().hex[:10])
    schema = settings.db_schema("threads")
    try:
        pool = await create_pool(settings.pg_dsn, schema, max_size=2)
    except OSError as exc:
        pytest.fail(f"Postgres at {settings.pg_dsn} does not answer ({exc})")
    try:
        await migrate(pool, schema, [BUS_MIGRATIONS])
        yield pool
    finally:
        await pool.close()
        await drop_namespace_schemas(settings)


@pytest.fixture
async def db(pool: asyncpg.Pool) -> AsyncIterator[Counted]:
    """A connection in a transaction that is rolled back after the test."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield Counted(conn)
        finally:
            await tx.rollback()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("test")


def context(
    db: Counted, tracer: Tracer, span: Span = INVALID_SPAN, record: KafkaRecord | None = None
) -> HandlerContext:
    return HandlerContext(
        conn=cast(asyncpg.Connection, db), settings=Settings(), record=record, span=span,
        tracer=tracer,
    )  # fmt: skip


def sent_by(traceparent: str) -> KafkaRecord:
    return KafkaRecord(
        topic="t", key=None, value=None, headers=(("traceparent", traceparent.encode()),)
    )


async def row(db: Counted, key: str) -> dict[str, Any] | None:
    found = await db.conn.fetchrow(
        "SELECT traceparent, tracestate, links FROM trace_threads WHERE key = $1", key
    )
    return None if found is None else dict(found)


def named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


async def test_remember_keeps_the_current_span_and_replaces_it_but_not_with_nothing(
    db: Counted, tracer: Tracer
) -> None:
    with tracer.start_as_current_span("registration") as first:
        await context(db, tracer, first).remember("checkout@1.4.2")
        kept = current_trace_headers()["traceparent"]
    assert await row(db, "checkout@1.4.2") == {
        "traceparent": kept, "tracestate": None, "links": [],
    }  # fmt: skip
    await context(db, tracer).remember("checkout@1.4.2")  # no span: what was kept stays
    assert db.trips == 1
    assert (await row(db, "checkout@1.4.2") or {})["traceparent"] == kept
    with tracer.start_as_current_span("registered again") as again:
        await context(db, tracer, again).remember("checkout@1.4.2")
        replaced = current_trace_headers()["traceparent"]
    assert replaced != kept
    assert (await row(db, "checkout@1.4.2") or {})["traceparent"] == replaced
    await context(db, tracer).remember("nothing@0")
    assert await row(db, "nothing@0") is None


async def test_links_are_the_spans_that_sent_the_events_each_kept_once_in_order(
    db: Counted, tracer: Tracer
) -> None:
    await context(db, tracer, record=sent_by(ONE)).remember_link("checkout@1.4.2")
    await context(db, tracer, record=sent_by(ONE)).remember_link("checkout@1.4.2")  # again
    await context(db, tracer).remember_link("checkout@1.4.2", TWO)  # named by the caller
    await context(db, tracer).remember_link("checkout@1.4.2")  # nothing sent it: nothing kept
    await context(db, tracer, record=sent_by(TWO)).remember_link("checkout@1.4.2")
    assert db.trips == 4
    assert await row(db, "checkout@1.4.2") == {
        "traceparent": None, "tracestate": None, "links": [ONE, TWO],
    }  # fmt: skip
    # Remembering the span to continue keeps the links, and links keep the span.
    with tracer.start_as_current_span("registration") as registration:
        await context(db, tracer, registration).remember("checkout@1.4.2")
        kept = current_trace_headers()["traceparent"]
    await context(db, tracer).remember_link("checkout@1.4.2", ONE)
    assert await row(db, "checkout@1.4.2") == {
        "traceparent": kept, "tracestate": None, "links": [ONE, TWO],
    }  # fmt: skip


async def test_recall_reads_many_keys_in_one_query_and_again_after_a_change(
    db: Counted, tracer: Tracer
) -> None:
    await context(db, tracer).remember_link("b", TWO)
    with tracer.start_as_current_span("registration") as registration:
        await context(db, tracer, registration).remember("a")
        a = current_trace_headers()["traceparent"]
    db.trips = 0
    ctx = context(db, tracer)
    found = await ctx.recall("a", "b", "c", "a")
    assert found == {"a": Thread(a), "b": Thread(links=(TWO,)), "c": NO_THREAD}
    assert db.trips == 1
    assert await ctx.recall("c", "b") == {"c": NO_THREAD, "b": Thread(links=(TWO,))}
    async with ctx.continuing("a", "x"), ctx.continuing("c", "y"):
        pass
    assert db.trips == 1  # kept for the rest of the context
    with tracer.start_as_current_span("later"):
        await ctx.remember("a")
        later = current_trace_headers()["traceparent"]
    await ctx.remember_link("c", ONE)
    assert await ctx.recall("a", "b", "c") == {
        "a": Thread(later), "b": Thread(links=(TWO,)), "c": Thread(links=(ONE,)),
    }  # fmt: skip
    assert db.trips == 4  # two writes, one read of what they changed
    assert await context(db, tracer).recall() == {}
    assert db.trips == 4


async def test_later_work_continues_the_remembered_trace_linked_to_what_set_it_off(
    db: Counted, tracer: Tracer, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys")
    keys.create("gates")
    with tracer.start_as_current_span("registration") as registration:
        await context(db, tracer, registration).remember("checkout@1.4.2")
    await context(db, tracer, record=sent_by(ONE)).remember_link("checkout@1.4.2")
    with tracer.start_as_current_span("an approval, in a trace of its own") as approving:
        ctx = context(db, tracer, approving)
        ctx.signing_key = keys.signing_key("gates")  # what it decides is signed, as gates signs
        async with ctx.continuing("checkout@1.4.2", "judge again", {"a": "b"}) as thread:
            assert ctx.span is not approving  # the work's own span meanwhile
            ctx.span.set_attribute("lockstep.outcome", "pass")
            ctx.emit(sample(GatePassed, service="checkout", version="1.4.2", environment="prod-eu"))
        assert ctx.span is approving
    assert [f"{lk.context.span_id:016x}" for lk in thread.span_links()] == [ONE.split("-")[2]]
    judged = named(spans, "judge again")
    assert judged.context is not None and judged.parent is not None
    assert judged.context.trace_id == registration.get_span_context().trace_id
    assert judged.parent.span_id == registration.get_span_context().span_id
    assert [lk.context.span_id for lk in judged.links] == [approving.get_span_context().span_id]
    assert judged.attributes == {"a": "b", "lockstep.outcome": "pass"}
    [record] = ctx.emitted  # what it emits carries the continued trace
    _, trace_id, span_id, _ = (record.header("traceparent") or "").split("-")
    assert (trace_id, span_id) == (
        f"{judged.context.trace_id:032x}",
        f"{judged.context.span_id:016x}",
    )


async def test_work_with_nothing_remembered_and_no_span_starts_a_trace_of_its_own(
    db: Counted, tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    ctx = context(db, tracer)  # a periodic turn
    async with ctx.continuing("unknown@0", "a window opened") as thread:
        assert thread == NO_THREAD and ctx.span is not INVALID_SPAN
        await ctx.remember("unknown@0")  # what it began is what later work continues
    started = named(spans, "a window opened")
    assert started.context is not None and started.parent is None
    kept = await row(db, "unknown@0")
    assert kept is not None and kept["traceparent"].split("-")[1] == (
        f"{started.context.trace_id:032x}"
    )
