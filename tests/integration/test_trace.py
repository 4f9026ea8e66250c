"""One trace links the CI build, the registry's handling, and whoever reads what it emitted."""

from __future__ import annotations

import asyncio
import http.server
import io
import threading
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console

from cli.views import print_trace
from events import ArtifactPackaged, ArtifactPublished
from shared.bus import HandlerContext, Router
from shared.service import RunningService, ServiceSpec
from shared.telemetry import current_trace_headers, read_spans
from tests.integration.conftest import Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration


async def spans_where(
    ns: Namespace, check: Any, n: int = 1, timeout: float = 15
) -> list[dict[str, Any]]:
    """Spans kept locally by the services (they are batched: give them a moment)."""
    for _ in range(int(timeout / 0.1)):
        found = [s for s in read_spans(ns.settings.trace_dir) if check(s)]
        if len(found) >= n:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"fewer than {n} matching spans in {ns.settings.trace_dir}")


def parent_of(traceparent: str) -> tuple[str, str]:
    _, trace_id, span_id, _ = traceparent.split("-")
    return trace_id, span_id


def handling(event_type: str, label: str) -> Any:
    return lambda s: (
        s["name"] == f"process {event_type}" and s["attributes"].get("lockstep.artifact") == label
    )


async def test_the_registry_continues_the_ci_trace_and_passes_it_on(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    seen_by_observer: list[str] = []
    observer = Router()

    @observer.handles(ArtifactPublished)
    async def watch(event: ArtifactPublished, ctx: HandlerContext) -> None:
        if event.custom_data.service == service:
            seen_by_observer.append(event.custom_data.version)

    label = f"{service}@1.0.0"
    ci = TracerProvider()
    ci_spans = InMemorySpanExporter()
    ci.add_span_processor(SimpleSpanProcessor(ci_spans))
    async with ns.service(ServiceSpec(name="observer", router=observer)):
        with ci.get_tracer("ci").start_as_current_span("ci build") as ci_span:
            traceparent = current_trace_headers()["traceparent"]
            await ns.publish(
                ArtifactPackaged.build(
                    service=service, version="1.0.0", digest=digest(label), commit="c"
                ),
                traceparent=traceparent,
            )
        ci_trace = format(ci_span.get_span_context().trace_id, "032x")
        ci_span_id = format(ci_span.get_span_context().span_id, "016x")

        [handled] = await spans_where(ns, handling("artifact.packaged", label))
        [observed] = await spans_where(ns, handling("artifact.published", label))

    assert (handled["trace_id"], handled["parent_id"]) == (ci_trace, ci_span_id)
    assert handled["service"] == "lockstep-artifacts"
    assert handled["attributes"]["lockstep.outcome"] == "registered"
    # The emitted event carries the handler's context, so the next service's span is its child.
    [record] = [
        r
        for r in ns.log.records
        if r.topic == ns.topic("artifacts")
        and r.header("ce_type") == ArtifactPublished.TYPE
        and r.key == service.encode()
    ]
    assert parent_of(record.header("traceparent") or "") == (ci_trace, handled["span_id"])
    assert (observed["trace_id"], observed["parent_id"]) == (ci_trace, handled["span_id"])
    assert observed["service"] == "lockstep-observer"
    assert seen_by_observer == ["1.0.0"]

    out = io.StringIO()
    assert print_trace(Console(file=out, width=200), ns.settings, label, wait=0)
    text = out.getvalue()
    assert f"trace {ci_trace}" in text
    assert "lockstep-artifacts: process artifact.packaged  [registered]" in text
    assert "└─ lockstep-observer: process artifact.published" in text


async def test_without_a_ci_traceparent_the_registry_starts_the_trace(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    label = f"{service}@2.0.0"
    await ns.publish(
        ArtifactPackaged.build(service=service, version="2.0.0", digest=digest(label), commit="c")
    )

    [handled] = await spans_where(ns, handling("artifact.packaged", label))
    assert handled["parent_id"] is None
    rows = await ns.sql("artifacts", "SELECT trace_id FROM artifacts WHERE service = $1", service)
    assert rows[0]["trace_id"] == handled["trace_id"]

    def published() -> list[Any]:
        """the artifact.published record"""
        return [
            r
            for r in ns.log.records
            if r.header("ce_type") == ArtifactPublished.TYPE and r.key == service.encode()
        ]

    [record] = await ns.log.wait_for(published)
    assert parent_of(record.header("traceparent") or "") == (
        handled["trace_id"],
        handled["span_id"],
    )


class _OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """A stand-in collector: keeps every OTLP/HTTP export request it is sent."""

    requests: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: object) -> None:
        return None


async def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(
    new_namespace: NamespaceFactory,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtlpReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ns = await new_namespace(otlp_endpoint=f"http://127.0.0.1:{server.server_port}")
        service = unique_service()
        label = f"{service}@1.0.0"
        async with ns.service():
            await ns.publish(
                ArtifactPackaged.build(
                    service=service, version="1.0.0", digest=digest(label), commit="c"
                )
            )
            await ns.log.wait_for(
                lambda: [r for r in ns.log.records if r.header("ce_type") == ArtifactPublished.TYPE]
            )
        # stopping the service flushed its spans
    finally:
        server.shutdown()
        thread.join()
        server.server_close()

    exported = []
    for path, body in _OtlpReceiver.requests:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs = {a.key: a.value.string_value for a in span.attributes}
                    exported.append(
                        (resource["service.name"], span.name, attrs.get("lockstep.artifact"))
                    )
    assert ("lockstep-artifacts", "process artifact.packaged", label) in exported
