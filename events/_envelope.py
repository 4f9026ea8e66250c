"""CloudEvents 1.0 over Kafka, binary content mode.

A record's value is the CDEvent (JSON); its CloudEvent attributes travel as ``ce_*`` headers with
``content-type: application/json``; W3C ``traceparent``/``tracestate`` headers carry the trace;
the key is the service the event is about. Any CloudEvents-aware consumer reads these records
as they are (the official SDK's ``cloudevents.core.bindings.kafka.from_binary`` among them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from pydantic import ValidationError

from events._base import CDEvent, split_type
from events._registry import known_types, model_for

CONTENT_TYPE = "application/json"
TRACE_HEADERS = ("traceparent", "tracestate")
REQUIRED_CE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
DEFAULT_MAX_EVENT_BYTES = 512 * 1024

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record as it is (or will be) on Kafka: bytes in, bytes out."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int = -1
    offset: int = -1

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", errors="replace")
        return None


@dataclass(frozen=True, slots=True)
class Decoded:
    event: CDEvent
    trace_headers: dict[str, str] = field(default_factory=dict)


class InvalidEvent(ValueError):
    """A record Lockstep cannot read. ``reason`` names the field at fault and the fix."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def _rfc3339(event: CDEvent) -> str:
    return event.context.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(
    event: CDEvent, *, topic: str, trace_headers: Mapping[str, str] | None = None
) -> KafkaRecord:
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.context.id.encode()),
        ("ce_source", event.context.source.encode()),
        ("ce_type", event.context.type.encode()),
        ("ce_time", _rfc3339(event).encode()),
        ("content-type", CONTENT_TYPE.encode()),
    ]
    subject_id = getattr(event.subject, "id", None)
    if subject_id:
        headers.append(("ce_subject", str(subject_id).encode()))
    for name in TRACE_HEADERS:
        value = (trace_headers or {}).get(name)
        if value:
            headers.append((name, value.encode()))
    return KafkaRecord(
        topic=topic,
        key=event.partition_key().encode(),
        value=event.to_json(),
        headers=tuple(headers),
    )


def decode(record: KafkaRecord, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Decoded:
    """Read a record into its typed event, or raise InvalidEvent saying what is wrong."""
    if record.value is None:
        raise InvalidEvent("record has no value (a tombstone?); an event needs its JSON data")
    if len(record.value) > max_bytes:
        raise InvalidEvent(
            f"record is {len(record.value)} bytes, over the limit of {max_bytes} bytes; "
            "keep large reports (SBOMs, test logs) elsewhere and send their URI",
            field="value",
        )
    refuse_unstorable(record)
    headers = _header_map(record.headers)
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/cloudevents"):
        raise InvalidEvent(
            f"content-type {content_type!r} is CloudEvents structured mode; Lockstep reads binary "
            "content mode: put the attributes in ce_* headers and the data alone in the value",
            field="content-type",
        )
    for name in REQUIRED_CE_HEADERS:
        if not headers.get(name):
            raise InvalidEvent(
                f"missing header {name}: Lockstep reads CloudEvents in Kafka binary content mode "
                f"and needs {', '.join(REQUIRED_CE_HEADERS)}",
                field=name,
            )
    if headers["ce_specversion"] != "1.0":
        raise InvalidEvent(
            f"ce_specversion is {headers['ce_specversion']!r}; Lockstep reads CloudEvents 1.0",
            field="ce_specversion",
        )
    if content_type and content_type.split(";")[0].strip() != CONTENT_TYPE:
        raise InvalidEvent(
            f"content-type is {content_type!r}; event data must be {CONTENT_TYPE}",
            field="content-type",
        )
    ce_type = headers["ce_type"]
    model = model_for(ce_type)
    if model is None:
        raise InvalidEvent(
            f"unknown event type {ce_type!r}; Lockstep reads: {', '.join(known_types())}",
            field="ce_type",
        )
    try:
        event = model.model_validate_json(record.value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            detail = first.get("ctx", {}).get("error", first["msg"])
            raise InvalidEvent(
                f"value is not valid JSON ({detail}); the data of {ce_type} is a JSON document",
                field="value",
            ) from None
        raise InvalidEvent(explain(exc, ce_type), field=_first_loc(exc)) from None
    if split_type(event.context.type) != split_type(ce_type):
        raise InvalidEvent(
            f"context.type {event.context.type!r} disagrees with header ce_type {ce_type!r}; "
            "they must name the same event type",
            field="context.type",
        )
    if event.context.id != headers["ce_id"]:
        raise InvalidEvent(
            f"context.id {event.context.id!r} disagrees with header ce_id {headers['ce_id']!r}; "
            "they must be the same event id",
            field="context.id",
        )
    trace = {name: headers[name] for name in TRACE_HEADERS if name in headers}
    return Decoded(event=event, trace_headers=trace)


def refuse_unstorable(record: KafkaRecord) -> None:
    """Postgres text cannot hold a NUL character: such a record is refused at the edge."""
    for name, value in record.headers:
        if "\x00" in name or (value is not None and b"\x00" in value):
            raise InvalidEvent(
                f"header {name!r} holds a NUL character; header names and values must be text",
                field=name.replace("\x00", "\\0"),
            )
    if b"\\u0000" in (record.value or b""):
        raise InvalidEvent(
            "the data holds a \\u0000 (NUL) character, which no text field may contain",
            field="value",
        )


def explain(exc: ValidationError, event_type: str, *, limit: int = 5) -> str:
    """``subject.content.change: field required`` … — every fault by its path, then the fix."""
    parts: list[str] = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "is required but missing"
        elif err["type"] == "string_pattern_mismatch" and loc.endswith("source"):
            msg = "must be a URI-reference, without spaces"
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - limit
    tail = f"; and {more} more" if more > 0 else ""
    model = model_for(event_type)
    hint = f" {model.HINT}" if model is not None and model.HINT else ""
    return (
        f"{event_type} does not match its schema: {'; '.join(parts)}{tail}.{hint} "
        "`lockstep schema export DIR` writes the JSON Schema of every event type"
    )


def _first_loc(exc: ValidationError) -> str | None:
    errors = exc.errors(include_url=False)
    if not errors:
        return None
    return ".".join(str(p) for p in errors[0]["loc"]) or None


def _header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key not in out:  # the first occurrence wins, as for HTTP
            out[key] = value.decode("utf-8", errors="replace") if value is not None else ""
    return out
