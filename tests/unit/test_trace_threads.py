"""The runtime's trace threads: what a handler remembers of a subject's trace, and how later
work about it continues that trace (a span of it, linked to the span that set the work off).
The database is a stand-in that keeps the table in a dict."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, Tracer

from events import ApprovalUpdated, KafkaRecord
from shared.bus.handlers import NO_THREAD, HandlerContext, Thread
from shared.settings import Settings
from shared.telemetry import current_trace_headers

OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Threads:
    """trace_threads as a dict; counts its round trips."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.trips = 0

    async def execute(self, sql: str, *args: Any) -> str:
        self.trips += 1
        if "links" in sql.split("VALUES")[0]:
            key, link = args
            row = self.rows.setdefault(key, {"traceparent": None, "tracestate": None, "links": []})
            if link not in row["links"]:
                row["links"].append(link)
        else:
            key, traceparent, tracestate = args
            row = self.rows.setdefault(key, {"links": []})
            row.update(traceparent=traceparent, tracestate=tracestate)
        return "INSERT 0 1"

    async def fetch(self, sql: str, keys: list[str]) -> list[dict[str, Any]]:
        self.trips += 1
        return [{"key": k, **self.rows[k]} for k in keys if k in self.rows]


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("test")


def context(
    db: Threads, tracer: Tracer, span: Span = INVALID_SPAN, record: KafkaRecord | None = None
) -> HandlerContext:
    return HandlerContext(
        conn=cast(asyncpg.Connection, db), settings=Settings(), record=record, span=span,
        tracer=tracer,
    )  # fmt: skip


def approval() -> ApprovalUpdated:
    return ApprovalUpdated.build(
        service="checkout", version="1.4.2", environment="prod-eu", by="ann", decision="approved"
    )


def named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


async def test_later_work_continues_the_remembered_trace_linked_to_what_set_it_off(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    db = Threads()
    with tracer.start_as_current_span("registration") as registration:
        await context(db, tracer, registration).remember("checkout@1.4.2")
    with tracer.start_as_current_span("an approval, in a trace of its own") as approving:
        ctx = context(db, tracer, approving)
        async with ctx.continuing("checkout@1.4.2", "judge again", {"a": "b"}) as thread:
            assert ctx.span is not approving  # the work's own span meanwhile
            ctx.span.set_attribute("lockstep.outcome", "pass")
            ctx.emit(approval())
        assert ctx.span is approving
    assert thread.traceparent is not None
    judged = named(spans, "judge again")
    assert judged.context is not None and judged.parent is not None
    assert judged.context.trace_id == registration.get_span_context().trace_id
    assert judged.parent.span_id == registration.get_span_context().span_id
    assert [lk.context.span_id for lk in judged.links] == [approving.get_span_context().span_id]
    assert judged.attributes == {"a": "b", "lockstep.outcome": "pass"}
    [record] = ctx.emitted  # what it emits carries the continued trace
    _, trace_id, span_id, _ = (record.header("traceparent") or "").split("-")
    assert (trace_id, span_id) == (
        format(judged.context.trace_id, "032x"),
        format(judged.context.span_id, "016x"),
    )


async def test_work_already_in_the_remembered_trace_opens_no_span(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    db = Threads()
    with tracer.start_as_current_span("registration") as registration:
        ctx = context(db, tracer, registration)
        await ctx.remember("checkout@1.4.2")
        with tracer.start_as_current_span("evidence, in the same trace") as evidence:
            async with ctx.continuing("checkout@1.4.2", "judge again"):
                assert ctx.span is registration
                assert current_trace_headers()["traceparent"].split("-")[2] == format(
                    evidence.get_span_context().span_id, "016x"
                )
    assert [s.name for s in spans.get_finished_spans()] == [
        "evidence, in the same trace",
        "registration",
    ]


async def test_nothing_remembered_keeps_the_current_trace_or_starts_one_of_its_own(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    db = Threads()
    with tracer.start_as_current_span("a handler") as handling:
        async with context(db, tracer, handling).continuing("unknown@0", "continued"):
            pass
    assert [s.name for s in spans.get_finished_spans()] == ["a handler"]
    ctx = context(db, tracer)  # a periodic turn: no span of its own
    async with ctx.continuing("unknown@0", "a window opened"):
        ctx.emit(approval())
    started = named(spans, "a window opened")
    assert started.parent is None and list(started.links) == []
    assert ctx.emitted[0].header("traceparent") is not None


async def test_threads_are_read_once_for_many_keys_and_again_after_a_change(
    tracer: Tracer,
) -> None:
    db = Threads()
    db.rows["a"] = {"traceparent": OTHER, "tracestate": None, "links": []}
    ctx = context(db, tracer)
    found = await ctx.recall("a", "b", "a")
    assert found == {"a": Thread(OTHER), "b": NO_THREAD} and db.trips == 1
    async with ctx.continuing("a", "x"), ctx.continuing("b", "y"):
        pass
    assert db.trips == 1  # kept for the rest of the context
    with tracer.start_as_current_span("later"):
        await ctx.remember("a")
    assert (await ctx.recall("a"))["a"].traceparent != OTHER
    assert db.trips == 3


async def test_links_are_the_spans_that_sent_the_events_each_kept_once(tracer: Tracer) -> None:
    db = Threads()
    sent = KafkaRecord(topic="t", key=None, value=None, headers=(("traceparent", OTHER.encode()),))
    ctx = context(db, tracer, record=sent)
    await ctx.remember_link("checkout@1.4.2")
    await ctx.remember_link("checkout@1.4.2")
    await context(db, tracer).remember_link("checkout@1.4.2")  # nothing sent it: nothing kept
    assert db.trips == 2
    [thread] = (await ctx.recall("checkout@1.4.2")).values()
    assert thread == Thread(links=(OTHER,))
    [link] = Thread(links=(OTHER, "not a traceparent")).span_links()
    assert format(link.context.span_id, "016x") == OTHER.split("-")[2]
