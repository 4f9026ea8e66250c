"""No record, however malformed, makes reading it raise anything but InvalidEvent.

``decode`` and ``KafkaRecord.from_consumer_record`` are what stands between Kafka and a
consumer loop: whatever they are given, they return or raise InvalidEvent with a reason, and
never fall back on the catch-all ("the record could not be read"), which would mean a case
nobody thought of. What a dead letter is made of must stay storable in Postgres and sendable
to Kafka whatever the record held.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import ArtifactPackaged, InvalidEvent, KafkaRecord, decode, encode
from shared.bus.dlq import dead_letter, reason_of

CATCH_ALL = "the record could not be read ("


def good_record() -> KafkaRecord:
    event = ArtifactPackaged.build(
        service="checkout", version="1.4.2", digest="sha256:" + "a" * 64, commit="abc1234"
    )
    return encode(event, topic="lockstep.artifacts", trace_headers={"traceparent": "00-x"})


GOOD = good_record()

any_text = st.text(max_size=30)  # surrogates, NUL and all
header_names = st.sampled_from([k for k, _ in GOOD.headers] + ["CE_TYPE", "Content-Type"]) | (
    any_text
)
header_values = st.none() | st.binary(max_size=60) | st.sampled_from([v for _, v in GOOD.headers])
headers = st.lists(st.tuples(header_names, header_values), max_size=12).map(tuple)
raw_bytes = st.none() | st.binary(max_size=300)


def reads_or_refuses(record: KafkaRecord, **kw: Any) -> None:
    """decode returns, or raises InvalidEvent for a reason it names (not the catch-all)."""
    try:
        decode(record, **kw)
    except InvalidEvent as exc:
        assert exc.reason and not exc.reason.startswith(CATCH_ALL), exc.reason
        assert len(exc.reason) < 2000  # a reason is a line or two, whatever was quoted


@given(key=raw_bytes, value=raw_bytes, headers=headers)
def test_decode_refuses_arbitrary_bytes_and_headers_with_a_reason(
    key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes | None], ...]
) -> None:
    reads_or_refuses(KafkaRecord(topic="t", key=key, value=value, headers=headers))


@given(
    swap=st.dictionaries(st.sampled_from([k for k, _ in GOOD.headers]), header_values),
    extra=headers,
    cut=st.integers(0, len(GOOD.value or b"")),
    splice=st.binary(max_size=20),
    key=raw_bytes,
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_decode_refuses_damaged_good_records_with_a_reason(
    swap: dict[str, bytes | None],
    extra: tuple[tuple[str, bytes | None], ...],
    cut: int,
    splice: bytes,
    key: bytes | None,
) -> None:
    """Near misses reach deeper checks than random bytes do: a good record with some headers
    replaced (by null, by garbage), more added, and its JSON spliced."""
    value = GOOD.value or b""
    hs = tuple((k, swap.get(k, v)) for k, v in GOOD.headers) + extra
    damaged = dataclasses.replace(
        GOOD, key=key, headers=hs, value=value[:cut] + splice + value[cut + len(splice) :]
    )
    reads_or_refuses(damaged)


anything = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.floats(),
    any_text,
    st.binary(max_size=40),
    st.lists(st.integers(), max_size=3),
    st.builds(object),
)
header_items = st.one_of(
    st.tuples(any_text | st.binary(max_size=20) | anything, header_values | anything),
    anything,  # not even a pair
)


@given(
    topic=anything,
    partition=anything,
    offset=anything,
    key=raw_bytes | anything,
    value=raw_bytes | anything,
    headers=st.none() | st.lists(header_items, max_size=6) | anything,
)
def test_converting_any_consumer_record_never_raises(
    topic: Any, partition: Any, offset: Any, key: Any, value: Any, headers: Any
) -> None:
    r = SimpleNamespace(
        topic=topic, partition=partition, offset=offset, key=key, value=value, headers=headers
    )
    record = KafkaRecord.from_consumer_record(r)
    assert isinstance(record.topic, str) and isinstance(record.offset, int)
    for name, v in record.headers:
        assert isinstance(name, str) and (v is None or isinstance(v, bytes))
        name.encode("utf-8")  # text Postgres and Kafka can carry
    reads_or_refuses(record)
    letter = dead_letter(record, dlq_topic="d", error="e", stage="decode", group="g", attempts=1)
    assert_sendable(letter)


def test_converting_a_record_object_that_raises_on_every_attribute_never_raises() -> None:
    class Hostile:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"no {name} for you")

    record = KafkaRecord.from_consumer_record(Hostile())
    with pytest.raises(InvalidEvent, match="could not be read: RuntimeError"):
        decode(record)


def consumer_record(**overrides: Any) -> ConsumerRecord[bytes, bytes]:
    fields: dict[str, Any] = {
        "topic": GOOD.topic,
        "partition": 2,
        "offset": 7,
        "timestamp": 0,
        "timestamp_type": 0,
        "key": GOOD.key,
        "value": GOOD.value,
        "checksum": None,
        "serialized_key_size": 8,
        "serialized_value_size": 100,
        "headers": GOOD.headers,
    }
    return ConsumerRecord(**(fields | overrides))


def headers_with(**changed: bytes | None) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((k, changed.get(k, v)) for k, v in GOOD.headers)


def test_an_aiokafka_record_converts_as_it_is() -> None:
    record = KafkaRecord.from_consumer_record(consumer_record())
    assert record == dataclasses.replace(GOOD, partition=2, offset=7)
    assert decode(record).event.id == decode(GOOD).event.id


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"headers": headers_with(ce_type=None)}, "ce_type", ["header ce_type is null"]),
        ({"headers": headers_with(ce_id=None)}, "ce_id", ["header ce_id is null"]),
        (
            {"headers": (*GOOD.headers, (b"\xff\xfe", b"v"))},
            "\\xff\\xfe",
            ["header name", "is not UTF-8 text"],
        ),
        ({"headers": (*GOOD.headers, ("x\udcff", b"v"))}, "x\\udcff", ["lone surrogate"]),
        ({"headers": headers_with(ce_type=b"\xc3\x28")}, "ce_type", ["not UTF-8 text"]),
        ({"headers": (*GOOD.headers, ("x", b"y" * 70_000))}, "headers", ["over the limit"]),
        (
            {"headers": (*GOOD.headers, ("ce_id", b"another"))},
            "ce_id",
            ["ce_id is given twice", "one value"],
        ),
        (
            {"headers": (*GOOD.headers, ("CE_TYPE", b"dev.cdevents.artifact.published.0.3.0"))},
            "ce_type",
            ["given twice"],
        ),
        ({"headers": ((1, 2),)}, "1", ["header name is int"]),
        ({"headers": 42}, "headers", ["not (name, value) pairs"]),
        ({"key": b"\xff" * 8}, "key", ["key", "not UTF-8 text"]),
        ({"key": b"k" * 5000}, "key", ["5000 bytes", "over the limit"]),
        ({"key": 12}, "key", ["key is int"]),
        ({"value": None}, None, ["no value"]),
        ({"value": "{}"}, "context", ["context: is required"]),  # a str, as bytes
        ({"value": b"\x89PNG\r\n\x1a\n"}, "value", ["not valid JSON"]),
        ({"value": b"[" * 200_000 + b"]" * 200_000}, "value", ["recursion limit"]),
        ({"value": b'{"context": ' * 100_000 + b"}" * 100_000}, "value", ["not valid JSON"]),
        ({"value": b"[1, 2, 3]"}, "value", ["Input should be an object"]),
        ({"value": b"\xef\xbb\xbf" + (GOOD.value or b"")}, "value", ["not valid JSON"]),
        (
            {"value": (GOOD.value or b"").replace(b"abc1234", b"abc\\ud800")},
            "value",
            ["not valid JSON"],
        ),
        (
            {"value": (GOOD.value or b"").replace(b'"abc1234"', b'"abc\x00"')},
            "value",
            ["not valid JSON"],
        ),
        ({"value": b"x" * 3_000_000}, "value", ["over the limit"]),
    ],
)
def test_each_malformed_consumer_record_is_refused_naming_what_is_wrong(
    overrides: dict[str, Any], field: str | None, words: list[str]
) -> None:
    record = KafkaRecord.from_consumer_record(consumer_record(**overrides))
    with pytest.raises(InvalidEvent) as caught:
        decode(record, max_bytes=2_000_000)
    assert caught.value.field == field
    for word in words:
        assert word in caught.value.reason
    assert not caught.value.reason.startswith(CATCH_ALL)


def test_header_access_is_total() -> None:
    record = KafkaRecord(
        topic="t",
        key=None,
        value=None,
        headers=(("a", None), ("b", b"\xff ok"), ("c", b"text"), ("a", b"second")),
    )
    assert record.header("a") is None  # null: no value (the first occurrence wins)
    assert record.header("b") == "\ufffd ok"
    assert record.header("c") == "text"
    assert record.header("missing") is None


def assert_sendable(letter: KafkaRecord) -> None:
    """What the outbox and the producer need: text names, bytes (or null) values."""
    for name, value in letter.headers:
        assert "\x00" not in name
        name.encode("utf-8")
        assert value is None or isinstance(value, bytes)
    assert reason_of(letter)["stage"]


def test_a_dead_letter_of_anything_is_storable_and_sendable() -> None:
    record = KafkaRecord(
        topic="t",
        key=b"\xff",
        value=b"\x00",
        headers=(("ce_type", None), ("bad\x00name", b"v"), ("lone\udcffsurrogate", b"v")),
        partition=1,
        offset=2,
    )
    letter = dead_letter(
        record, dlq_topic="d", error="x\udcff" * 5000, stage="decode", group="g", attempts=1
    )
    assert_sendable(letter)
    assert ("ce_type", None) in letter.headers  # a null value stays null
    assert (letter.key, letter.value) == (record.key, record.value)
    assert len(reason_of(letter)["error"]) < 4100  # bounded, and said so
    assert reason_of(letter)["error"].endswith("(10000 characters)")


def test_nul_in_the_json_data_is_refused_before_postgres_sees_it() -> None:
    doc = json.loads(GOOD.value or b"")
    doc["subject"]["content"]["change"]["id"] = "abc\x00"
    record = dataclasses.replace(GOOD, value=json.dumps(doc).encode())
    with pytest.raises(InvalidEvent, match="NUL"):
        decode(record)
