"""The span logic of the runtime's trace threads (``continued_span``): in which span work
about a remembered subject runs, given what is remembered and what span is current. No
database: what the table keeps, and ``HandlerContext`` reading and writing it, are tested on
the real Postgres (tests/integration/test_trace_threads.py)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Tracer

from shared.bus.handlers import NO_THREAD, Thread, continued_span
from shared.telemetry import current_trace_headers

OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("test")


def named(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def thread_of(span: Span) -> Thread:
    """What ``remember`` keeps of ``span``."""
    with trace.use_span(span):
        return Thread(current_trace_headers()["traceparent"])


def test_work_set_off_in_another_trace_runs_in_the_remembered_one_linked_to_its_cause(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("registration") as registration:
        remembered = thread_of(registration)
    with (
        tracer.start_as_current_span("an approval, in a trace of its own") as approving,
        continued_span(tracer, remembered, "judge again", {"a": "b"}) as span,
    ):
        assert span is not None and trace.get_current_span() is span
        span.set_attribute("lockstep.outcome", "pass")
        headers = current_trace_headers()  # what is emitted meanwhile carries it
    judged = named(spans, "judge again")
    assert judged.context is not None and judged.parent is not None
    assert judged.context.trace_id == registration.get_span_context().trace_id
    assert judged.parent.span_id == registration.get_span_context().span_id
    assert [lk.context.span_id for lk in judged.links] == [approving.get_span_context().span_id]
    assert judged.attributes == {"a": "b", "lockstep.outcome": "pass"}
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    assert (trace_id, span_id) == (
        f"{judged.context.trace_id:032x}",
        f"{judged.context.span_id:016x}",
    )


def test_work_set_off_by_a_clock_runs_in_the_remembered_trace_with_no_link(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    with continued_span(tracer, Thread(OTHER), "soak time is up", {}) as span:
        assert span is not None
    done = named(spans, "soak time is up")
    assert done.context is not None and done.parent is not None
    assert f"{done.context.trace_id:032x}" == OTHER.split("-")[1]
    assert f"{done.parent.span_id:016x}" == OTHER.split("-")[2]
    assert list(done.links) == []


def test_work_already_in_the_remembered_trace_opens_no_span(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("registration") as registration:
        remembered = thread_of(registration)
        with (
            tracer.start_as_current_span("evidence, in the same trace") as evidence,
            continued_span(tracer, remembered, "judge again", {}) as span,
        ):
            assert span is None and trace.get_current_span() is evidence
    assert [s.name for s in spans.get_finished_spans()] == [
        "evidence, in the same trace",
        "registration",
    ]


def test_nothing_remembered_keeps_the_current_trace_or_starts_one_of_its_own(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    with (
        tracer.start_as_current_span("a handler") as handling,
        continued_span(tracer, NO_THREAD, "continued", {}) as span,
    ):
        assert span is None and trace.get_current_span() is handling
    assert [s.name for s in spans.get_finished_spans()] == ["a handler"]
    with continued_span(tracer, NO_THREAD, "a window opened", {}) as span:  # a periodic turn
        assert span is not None and current_trace_headers().get("traceparent")
    started = named(spans, "a window opened")
    assert started.parent is None and list(started.links) == []


def test_a_thread_of_links_only_is_nothing_to_continue(
    tracer: Tracer, spans: InMemorySpanExporter
) -> None:
    with (
        tracer.start_as_current_span("a handler"),
        continued_span(tracer, Thread(links=(OTHER,)), "continued", {}) as span,
    ):
        assert span is None
    assert [s.name for s in spans.get_finished_spans()] == ["a handler"]


def test_without_a_tracer_no_span_is_started(tracer: Tracer) -> None:
    with continued_span(None, Thread(OTHER), "x", {}) as span:
        assert span is None
    with (
        tracer.start_as_current_span("a handler") as handling,
        continued_span(None, Thread(OTHER), "x", {}) as span,
    ):
        assert span is None and trace.get_current_span() is handling


def test_the_remembered_tracestate_goes_on(tracer: Tracer) -> None:
    thread = Thread(OTHER, tracestate="vendor=abc")
    with continued_span(tracer, thread, "x", {}):
        assert current_trace_headers().get("tracestate") == "vendor=abc"


def test_links_that_do_not_parse_are_left_out() -> None:
    [link] = Thread(links=(OTHER, "not a traceparent", "")).span_links()
    assert f"{link.context.span_id:016x}" == OTHER.split("-")[2]
    assert f"{link.context.trace_id:032x}" == OTHER.split("-")[1]
