"""The envelope's edges: the ``ce_time`` header is held to the rule of ``context.timestamp``,
and the ``content-type`` header that binary mode needs is required and must be JSON. Each
refusal is an InvalidEvent naming the header, so the consumer dead-letters the record."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from events import (
    ArtifactPackaged,
    InvalidEvent,
    KafkaRecord,
    SignalObserved,
    decode,
    encode,
    parse_event_time,
)
from events.testing import samples


def packaged() -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service="checkout", version="1.4.2", digest="sha256:" + "a" * 64, commit="abc1234"
    )


def good() -> KafkaRecord:
    return encode(packaged(), topic="lockstep.artifacts")


ABSENT = "absent"  # the header left out


def headers_with(record: KafkaRecord, name: str, value: bytes | str | None) -> KafkaRecord:
    """``record`` with header ``name`` set to ``value`` (ABSENT: without it)."""
    kept = [(k, v) for k, v in record.headers if k != name]
    if value != ABSENT:
        assert not isinstance(value, str)
        kept.append((name, value))
    return dataclasses.replace(record, headers=tuple(kept))


def refused(record: KafkaRecord) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode(record)
    return caught.value


# --- ce_time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ce_time", "words"),
    [
        (b"9999-12-31T23:59:59Z", ["more than a day in the future"]),
        (b"2999-01-01T00:00:00+02:00", ["more than a day in the future"]),
        (b"1999-12-31T23:59:59Z", ["before 2000"]),
        (b"1970-01-01T00:00:00Z", ["before 2000"]),
        (b"0001-01-01T00:00:00Z", ["before 2000"]),
        (b"yesterday", ["'yesterday' is not an RFC 3339 time"]),
        (b"", ["is not an RFC 3339 time"]),
        (b"1700000000", ["is not an RFC 3339 time"]),
        (b"2026-05-04", ["is not an RFC 3339 time"]),
        (b"2026-05-04T10:00:00", ["with its offset"]),
        (b"2026-13-45T10:00:00Z", ["ce_time"]),
        ("2026-05-04T10:00:00Z\u0660".encode(), ["is not an RFC 3339 time"]),  # Arabic zero
    ],
)
def test_a_ce_time_out_of_range_or_unreadable_is_refused(ce_time: bytes, words: list[str]) -> None:
    fault = refused(headers_with(good(), "ce_time", ce_time))
    assert fault.field == "ce_time"
    assert fault.reason.startswith("header ce_time ")
    for word in words:
        assert word in fault.reason
    assert "Value error" not in fault.reason


def test_a_null_ce_time_is_refused_and_an_absent_one_is_not_needed() -> None:
    fault = refused(headers_with(good(), "ce_time", None))
    assert (fault.field, "ce_time is null") == ("ce_time", fault.reason[7:22])
    assert isinstance(decode(headers_with(good(), "ce_time", ABSENT)).event, ArtifactPackaged)


def test_two_different_ce_times_are_refused() -> None:
    record = good()
    twice = dataclasses.replace(
        record, headers=(*record.headers, ("ce_time", b"2026-01-01T00:00:00Z"))
    )
    fault = refused(twice)
    assert fault.field == "ce_time" and "given twice" in fault.reason


def test_a_ce_time_not_utf8_is_refused() -> None:
    fault = refused(headers_with(good(), "ce_time", b"\xff2026"))
    assert fault.field == "ce_time" and "not UTF-8" in fault.reason


@pytest.mark.parametrize(
    "ce_time",
    [
        lambda now: now.isoformat(),
        lambda now: now.isoformat().replace("+00:00", "Z"),
        lambda now: (now - timedelta(days=400)).astimezone().isoformat(),
        lambda now: (now + timedelta(hours=23)).isoformat(),  # clock skew
        lambda now: now.strftime("%Y-%m-%dt%H:%M:%S.%f") + "z",
        lambda now: now.strftime("%Y-%m-%d %H:%M:%S") + "+0000",
    ],
)
def test_a_ce_time_within_the_rule_is_read(ce_time: Callable[[datetime], str]) -> None:
    record = headers_with(good(), "ce_time", ce_time(datetime.now(UTC)).encode())
    assert isinstance(decode(record).event, ArtifactPackaged)


def test_the_body_is_judged_before_its_header_copy() -> None:
    # both wrong: the reason is the body's, the field context.timestamp (as before)
    record = good()
    doc = json.loads(record.value or b"")
    doc["context"]["timestamp"] = "9999-12-31T23:59:59Z"
    record = dataclasses.replace(record, value=json.dumps(doc).encode())
    fault = refused(headers_with(record, "ce_time", b"9999-12-31T23:59:59Z"))
    assert fault.field == "context.timestamp"


@pytest.mark.parametrize("timestamp", [1_700_000_000, "1700000000", "2026-05-04", True])
def test_a_body_timestamp_that_is_not_rfc3339_text_is_refused(timestamp: object) -> None:
    record = headers_with(good(), "ce_time", ABSENT)
    doc = json.loads(record.value or b"")
    doc["context"]["timestamp"] = timestamp
    fault = refused(dataclasses.replace(record, value=json.dumps(doc).encode()))
    assert fault.field == "context.timestamp"


def test_a_signal_observed_at_an_absurd_time_is_refused_as_its_context_would_be() -> None:
    signal = SignalObserved.build(
        service="checkout", environment="prod-eu", metric="error_rate", value=0.1,
        source="prometheus",
    )  # fmt: skip
    record = encode(signal, topic="lockstep.signals")
    for observed, words in (("9999-12-31T23:59:59Z", "more than a day"),
                            ("1970-01-01T00:00:00Z", "before 2000"),
                            ("2026-05-04T10:00:00", "with its offset")):  # fmt: skip
        doc = json.loads(record.value or b"")
        doc["subject"]["content"]["observedAt"] = observed
        fault = refused(dataclasses.replace(record, value=json.dumps(doc).encode()))
        assert fault.field == "subject.content.observedAt"
        assert words in fault.reason
    with pytest.raises(ValueError, match="more than a day"):
        SignalObserved.build(
            service="checkout", environment="prod-eu", metric="error_rate", value=0.1,
            source="prometheus", observed_at=datetime(9999, 1, 1, tzinfo=UTC),
        )  # fmt: skip


def test_parse_event_time_is_the_one_rule() -> None:
    assert parse_event_time("2026-05-04T10:00:00Z") == datetime(2026, 5, 4, 10, tzinfo=UTC)
    moment = datetime(2026, 5, 4, 10, tzinfo=UTC)
    assert parse_event_time(moment) == moment
    for raw, words in (
        (9999, "is a number"),
        ("9999", "not an RFC 3339 time"),
        ("9999-12-31T23:59:59Z", "more than a day in the future"),
        ("1999-12-31T23:59:59Z", "before 2000"),
        (datetime(2026, 5, 4, 10), "timezone"),
        (None, "valid datetime"),
        ("x" * 10_000, r"characters\)"),  # the text quoted is bounded
    ):
        with pytest.raises(ValueError, match=words):
            parse_event_time(raw)


# --- content-type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        (ABSENT, ["missing header content-type", "content-type: application/json"]),
        (b"", ["missing header content-type"]),
        (b"   ", ["missing header content-type"]),
        (None, ["header content-type is null"]),
        (b"text/plain", ["must be application/json"]),
        (b"application/xml", ["must be application/json"]),
        (b"application/json-seq", ["must be application/json"]),
        (b"application/vnd.lockstep+json", ["must be application/json"]),
        (b"application/avro", ["must be application/json"]),
        (b"application/json; charset=latin-1", ["UTF-8", "charset=utf-8"]),
        (b'application/json; charset="utf-16"', ["UTF-8"]),
        (b"application/cloudevents+json", ["structured mode"]),
        (b"Application/CloudEvents+JSON; charset=utf-8", ["structured mode"]),
        (b"application/cloudevents-batch+json", ["structured mode"]),
    ],
)
def test_a_record_without_a_json_content_type_is_refused(
    content_type: bytes | str | None, words: list[str]
) -> None:
    fault = refused(headers_with(good(), "content-type", content_type))
    assert fault.field == "content-type"
    for word in words:
        assert word in fault.reason


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/json;charset=UTF-8",
        b'application/json; charset="utf-8"',
        b"Application/JSON",
        b" application/json ",
    ],
)
def test_json_with_or_without_a_utf8_charset_is_read(content_type: bytes) -> None:
    record = headers_with(good(), "content-type", content_type)
    assert isinstance(decode(record).event, ArtifactPackaged)


def test_a_missing_ce_attribute_is_named_before_a_missing_content_type() -> None:
    fault = refused(dataclasses.replace(good(), headers=()))
    assert fault.field == "ce_specversion"


def test_every_encoded_event_carries_content_type_and_a_ce_time_it_reads_back() -> None:
    for event in samples():
        record = encode(event, topic="lockstep.x")
        names = [k for k, _ in record.headers]
        assert names.count("content-type") == 1 and names.count("ce_time") == 1
        assert decode(record).event.id == event.id
