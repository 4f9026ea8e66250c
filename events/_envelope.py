"""CloudEvents 1.0 over Kafka, binary content mode.

A record's value is the CDEvent (JSON); its CloudEvent attributes travel as ``ce_*`` headers with
``content-type: application/json``; W3C ``traceparent``/``tracestate`` headers carry the trace;
the key is the service the event is about. Any CloudEvents-aware consumer reads these records
as they are (the official SDK's ``cloudevents.core.bindings.kafka.from_binary`` among them).

The content-type header is required. In binary mode it is the event's ``datacontenttype`` and
what declares the value's media type (Kafka protocol binding, 1.3 and 3.2.1); the "no
datacontenttype means JSON" default belongs to the JSON *event format*, i.e. structured mode,
which Lockstep does not read. So a record without it, or with another media type than
``application/json`` (parameters aside; a charset, if given, is UTF-8), is refused; one whose
content-type starts with ``application/cloudevents`` (any case) is structured mode, refused
saying so. ``ce_time`` is optional (as ``time`` is in CloudEvents), but one that is there is
held to the rule of the body's ``context.timestamp`` (``events._base.EventTime``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from pydantic import ValidationError

from events._base import CDEvent, parse_event_time, split_type
from events._registry import known_types, model_for

CONTENT_TYPE = "application/json"
TRACE_HEADERS = ("traceparent", "tracestate")
REQUIRED_CE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")
DEFAULT_MAX_EVENT_BYTES = 512 * 1024
MAX_KEY_BYTES = 1024  # a key is a service name
MAX_HEADER_BYTES = 64 * 1024  # all headers together: CloudEvents attributes and a trace
# the headers whose value decode uses
READ_HEADERS = (*REQUIRED_CE_HEADERS, "ce_time", "content-type")

# A header's value may be null on Kafka (length -1): None here, kept as None.
Headers = tuple[tuple[str, bytes | None], ...]
# What made a consumer record unreadable before it was even a KafkaRecord: (field, reason).
Faults = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """A record as it is (or will be) on Kafka: bytes in, bytes out.

    ``faults`` lists what ``from_consumer_record`` found wrong and made safe (a header name
    that is not UTF-8, a key that is not bytes); ``decode`` refuses a record that has any."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int = -1
    offset: int = -1
    faults: Faults = ()

    def header(self, name: str) -> str | None:
        """The first header ``name`` as text (bytes that are not UTF-8 replaced by U+FFFD);
        None if there is none, or its value is null. Never raises."""
        for k, v in self.headers:
            if k == name:
                return _as_text(v)
        return None

    @classmethod
    def from_consumer_record(cls, r: object) -> KafkaRecord:
        """A consumer record (aiokafka's ``ConsumerRecord``, or anything with its attributes)
        as a KafkaRecord. Never raises: what cannot be taken as it is (a header name that is
        not text, a key or value that is not bytes) is made safe and named in ``faults``, so
        that ``decode`` refuses the record saying what was wrong and a dead letter keeps the
        rest of it."""
        try:
            return _from_consumer_record(cls, r)
        except Exception as exc:  # a record object that breaks every expectation
            return cls(
                topic=_safe_str(_attr(r, "topic", ""), "topic")[0],
                key=None,
                value=None,
                partition=_int_or(_attr(r, "partition", -1)),
                offset=_int_or(_attr(r, "offset", -1)),
                faults=(("record", f"the record could not be read: {_exc_text(exc)}"),),
            )


def _from_consumer_record(cls: type[KafkaRecord], r: object) -> KafkaRecord:
    faults: list[tuple[str, str]] = []
    topic, fault = _safe_str(getattr(r, "topic", ""), "topic")
    if fault:
        faults.append(("topic", fault))
    key, fault = _safe_bytes(getattr(r, "key", None))
    if fault:
        faults.append(("key", f"key {fault}"))
    value, fault = _safe_bytes(getattr(r, "value", None))
    if fault:
        faults.append(("value", f"value {fault}"))
    headers: list[tuple[str, bytes | None]] = []
    raw_headers = getattr(r, "headers", None) or ()
    try:
        items = list(raw_headers)
    except Exception:
        items = []
        faults.append(
            ("headers", f"headers are {type(raw_headers).__name__}, not (name, value) pairs")
        )
    for item in items:
        try:
            raw_name, raw_value = item
        except Exception:
            faults.append(
                ("headers", f"a header is {_shown(repr(item))}, not a (name, value) pair")
            )
            continue
        name, fault = _safe_str(raw_name, "header name")
        if fault:
            faults.append((name, fault))
        header_value, fault = _safe_bytes(raw_value)
        if fault:
            faults.append((name, f"header {name!r}: value {fault}"))
        headers.append((name, header_value))
    return cls(
        topic=topic,
        key=key,
        value=value,
        headers=tuple(headers),
        partition=_int_or(getattr(r, "partition", -1)),
        offset=_int_or(getattr(r, "offset", -1)),
        faults=tuple(faults),
    )


def _attr(r: object, name: str, default: object) -> object:
    try:
        return getattr(r, name, default)
    except Exception:
        return default


def _safe_str(raw: object, what: str) -> tuple[str, str | None]:
    """``raw`` as text Postgres and Kafka can carry, and what was wrong with it (None: nothing).
    Bytes that are not UTF-8 and lone surrogates become backslash escapes."""
    if isinstance(raw, str):
        try:
            raw.encode("utf-8")
            return raw, None
        except UnicodeEncodeError:
            safe = raw.encode("utf-8", "backslashreplace").decode("utf-8")
            return safe, f"{what} {_shown(safe)!r} is not valid Unicode text (a lone surrogate)"
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            safe = data.decode("utf-8", "backslashreplace")
            return safe, f"{what} {_shown(repr(data))} is not UTF-8 text"
    safe = _shown(repr(raw))
    return safe, f"{what} is {type(raw).__name__} {safe}, not text"


def _safe_bytes(raw: object) -> tuple[bytes | None, str | None]:
    if raw is None or isinstance(raw, bytes):
        return raw, None
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw), None
    if isinstance(raw, str):
        return raw.encode("utf-8", "backslashreplace"), None  # a client that decoded it for us
    return None, f"is {type(raw).__name__} {_shown(repr(raw))}, not bytes"


def _int_or(raw: object, default: int = -1) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else default


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return None


def _shown(text: str, limit: int = 120) -> str:
    """User-supplied text quoted in a reason: bounded, so a reason stays a line."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _exc_text(exc: BaseException) -> str:
    return _shown(f"{type(exc).__name__}: {exc}", 300)


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
    """Read a record into its typed event, or raise InvalidEvent saying what is wrong. Raises
    nothing else, whatever the record holds."""
    try:
        return _decode(record, max_bytes)
    except InvalidEvent:
        raise
    except Exception as exc:  # RecursionError, MemoryError aside: a case not foreseen above
        raise InvalidEvent(
            f"the record could not be read ({_exc_text(exc)}); send a CloudEvent in Kafka "
            "binary content mode with its JSON data as the value"
        ) from None


def _decode(record: KafkaRecord, max_bytes: int) -> Decoded:
    if record.faults:
        field_at, reason = record.faults[0]
        more = f"; and {len(record.faults) - 1} more" if len(record.faults) > 1 else ""
        raise InvalidEvent(f"{reason}{more}", field=field_at)
    if not isinstance(record.value, bytes | None) or not isinstance(record.key, bytes | None):
        raise InvalidEvent("the record's key and value must be bytes", field="value")
    if record.value is None:
        raise InvalidEvent("record has no value (a tombstone?); an event needs its JSON data")
    if len(record.value) > max_bytes:
        raise InvalidEvent(
            f"record is {len(record.value)} bytes, over the limit of {max_bytes} bytes; "
            "keep large reports (SBOMs, test logs) elsewhere and send their URI",
            field="value",
        )
    _check_key(record.key)
    refuse_unstorable(record)
    headers = _header_map(record.headers)
    content_type = headers.get("content-type") or ""
    if content_type.strip().lower().startswith("application/cloudevents"):
        raise InvalidEvent(
            f"content-type {_shown(content_type)!r} is CloudEvents structured mode; Lockstep "
            "reads binary content mode: put the attributes in ce_* headers and the data alone "
            "in the value",
            field="content-type",
        )
    for name in REQUIRED_CE_HEADERS:
        if name in headers and headers[name] is None:
            raise InvalidEvent(
                f"header {name} is null (it has no value); it must hold the event's {name[3:]}",
                field=name,
            )
        if not headers.get(name):
            raise InvalidEvent(
                f"missing header {name}: Lockstep reads CloudEvents in Kafka binary content mode "
                f"and needs {', '.join(REQUIRED_CE_HEADERS)}",
                field=name,
            )
    if headers["ce_specversion"] != "1.0":
        raise InvalidEvent(
            f"ce_specversion is {_shown(headers['ce_specversion'] or '')!r}; "
            "Lockstep reads CloudEvents 1.0",
            field="ce_specversion",
        )
    _check_content_type(headers)
    ce_type = headers["ce_type"] or ""
    model = model_for(ce_type)
    if model is None:
        raise InvalidEvent(
            f"unknown event type {_shown(ce_type)!r}; Lockstep reads: {', '.join(known_types())}",
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
            f"context.type {_shown(event.context.type)!r} disagrees with header ce_type "
            f"{_shown(ce_type)!r}; "
            "they must name the same event type",
            field="context.type",
        )
    if event.context.id != headers["ce_id"]:
        raise InvalidEvent(
            f"context.id {_shown(event.context.id)!r} disagrees with header ce_id "
            f"{_shown(headers['ce_id'] or '')!r}; "
            "they must be the same event id",
            field="context.id",
        )
    _check_ce_time(headers)
    trace = {name: value for name in TRACE_HEADERS if (value := headers.get(name))}
    return Decoded(event=event, trace_headers=trace)


def _check_content_type(headers: Mapping[str, str | None]) -> None:
    """Binary mode: the content-type header declares the data's media type (the event's
    datacontenttype), and Lockstep's data is JSON."""
    if "content-type" in headers and headers["content-type"] is None:
        raise InvalidEvent(
            f"header content-type is null (it has no value); it must be {CONTENT_TYPE}, the "
            "media type of the event data",
            field="content-type",
        )
    content_type = (headers.get("content-type") or "").strip()
    if not content_type:
        raise InvalidEvent(
            f"missing header content-type: in CloudEvents' Kafka binary content mode it "
            f"declares the media type of the value (the event's datacontenttype); set "
            f"content-type: {CONTENT_TYPE}",
            field="content-type",
        )
    media_type, *parameters = (part.strip() for part in content_type.split(";"))
    if media_type.lower() != CONTENT_TYPE:
        raise InvalidEvent(
            f"content-type is {_shown(content_type)!r}; event data must be {CONTENT_TYPE}",
            field="content-type",
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise InvalidEvent(
                f"content-type is {_shown(content_type)!r}; JSON data is UTF-8 (RFC 8259): "
                f"send {CONTENT_TYPE}, or {CONTENT_TYPE}; charset=utf-8",
                field="content-type",
            )


def _check_ce_time(headers: Mapping[str, str | None]) -> None:
    """``ce_time`` may be left out; given, it is a time the event can have happened at, by the
    rule of ``context.timestamp`` (RFC 3339 with its offset, from 2000 to a day from now)."""
    if "ce_time" not in headers:
        return
    text = headers["ce_time"]
    if text is None:
        raise InvalidEvent(
            "header ce_time is null (it has no value); leave it out, or give the time the "
            "event happened (RFC 3339, as context.timestamp)",
            field="ce_time",
        )
    try:
        parse_event_time(text)
    except ValueError as exc:
        raise InvalidEvent(
            f"header ce_time {_shown(text)!r}: {exc}; it is the event's time, as context.timestamp",
            field="ce_time",
        ) from None


def _check_key(key: bytes | None) -> None:
    """The key is the name of the service the event is about (None: any partition)."""
    if key is None:
        return
    if len(key) > MAX_KEY_BYTES:
        raise InvalidEvent(
            f"key is {len(key)} bytes, over the limit of {MAX_KEY_BYTES}; the key is the name "
            "of the service the event is about",
            field="key",
        )
    try:
        key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent(
            f"key {_shown(repr(key))} is not UTF-8 text; the key is the name of the service "
            "the event is about, e.g. b'checkout'",
            field="key",
        ) from None


def refuse_unstorable(record: KafkaRecord) -> None:
    """Postgres text cannot hold a NUL character, nor a lone surrogate: such a record is
    refused at the edge, as are headers too large for any CloudEvent."""
    size = 0
    for name, value in record.headers:
        if not isinstance(name, str) or not isinstance(value, bytes | None):
            raise InvalidEvent(
                f"header {_shown(repr(name))} is not a (text, bytes) pair", field="headers"
            )
        shown = _shown(name.encode("utf-8", "backslashreplace").decode("utf-8"))
        if "\x00" in name or (value is not None and b"\x00" in value):
            raise InvalidEvent(
                f"header {shown!r} holds a NUL character; header names and values must be text",
                field=shown.replace("\x00", "\\0"),
            )
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(
                f"header name {shown!r} is not valid Unicode text", field="headers"
            ) from None
        size += len(name) + len(value or b"")
    if size > MAX_HEADER_BYTES:
        raise InvalidEvent(
            f"headers are {size} bytes, over the limit of {MAX_HEADER_BYTES} bytes; a CloudEvent "
            "needs only its ce_* attributes, content-type and the trace headers",
            field="headers",
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
    return ".".join(str(p) for p in errors[0]["loc"]) or "value"  # the document as a whole


def _header_map(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str | None]:
    """Names in lower case; the first occurrence wins, as for HTTP. A header decode reads
    (a ce_* attribute, content-type) given twice with different values is refused: which one
    is the event's?"""
    out: dict[str, str | None] = {}
    for name, value in headers:
        key = name.lower()
        text = _as_text(value)
        if key in READ_HEADERS and value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEvent(
                    f"header {key} {_shown(repr(value))} is not UTF-8 text", field=key
                ) from None
        if key not in out:
            out[key] = text
        elif key in READ_HEADERS and out[key] != text:
            raise InvalidEvent(
                f"header {key} is given twice, as {_shown(out[key] or '')!r} and "
                f"{_shown(text or '')!r}; a CloudEvents attribute has one value",
                field=key,
            )
    return out
