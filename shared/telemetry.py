"""OpenTelemetry for every service: one tracer provider per process, W3C trace context in
Kafka headers, spans exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and kept
locally as JSON lines (one file per process) so ``lockstep trace`` works with no collector."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
TRACER_NAME = "lockstep"


def current_trace_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span (empty outside any span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from_headers(headers: Mapping[str, str]) -> Context:
    """The remote parent named by ``traceparent`` (an empty context when there is none)."""
    return _PROPAGATOR.extract(dict(headers))


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans to ``<dir>/spans-<service>-<pid>.jsonl``, one JSON object a line."""

    def __init__(self, directory: Path, service: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / f"spans-{service}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock, self._path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [
            {
                "trace_id": format(lk.context.trace_id, "032x"),
                "span_id": format(lk.context.span_id, "016x"),
            }
            for lk in span.links
        ],
    }


def read_spans(directory: Path | None) -> Iterator[dict[str, Any]]:
    """Every span kept locally, in no particular order (torn last lines are skipped); none
    when no span store is kept."""
    if directory is None or not directory.is_dir():
        return
    for path in sorted(directory.glob("spans-*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def tracer_provider(settings: Settings, service: str) -> TracerProvider:
    """A provider for one service process. Always batched: a simple processor costs ms a span."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"lockstep-{service}"}))
    if settings.trace_dir is not None:
        provider.add_span_processor(
            BatchSpanProcessor(
                JsonlSpanExporter(settings.trace_dir, service), schedule_delay_millis=200
            )
        )
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def tracer(provider: TracerProvider) -> Tracer:
    return provider.get_tracer(TRACER_NAME)
