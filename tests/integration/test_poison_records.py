"""No record can stop a consumer (issue 10): every way a record can be unreadable ends in the
DLQ with the reason and the original bytes, and the partition goes on.

The records are sent as they are with a raw aiokafka producer, into the topic the artifacts
service consumes. One of them, a header name that is not UTF-8, is one aiokafka's own
(compiled) producer refuses to build and its consumer cannot decode (it raises in getmany, on
every fetch of that partition): it is built with aiokafka's pure-Python record batch builder
and sent with ``send_batch``, as a foreign client could have written it.

These tests read the DLQ themselves and look at what was handled in the service's tables
(the namespace's EventLog, which reads with the contract's SafeFetcher, would go past that
record too). ``lockstep tail`` is run against such a record as well.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from events import ArtifactPackaged, ArtifactPublished, KafkaRecord, encode
from shared.bus.consumer import content_digest, record_from_kafka
from shared.bus.dlq import reason_of
from shared.bus.kafka_client import kafka_consumer, kafka_producer
from shared.service import RunningService
from tests.integration.conftest import (
    EventLog,
    Namespace,
    NamespaceFactory,
    digest,
    unique_service,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

Headers = list[tuple[str, bytes | None]]


class RawName(str):
    """A header name whose bytes on the wire are not UTF-8 (only the pure-Python batch
    builder asks the name for its bytes; the compiled one refuses anything but str)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        self = super().__new__(cls, raw.decode("latin-1"))
        self.raw = raw
        return self

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy (a wait, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


class RawSender:
    """A plain aiokafka producer: records go out exactly as given, to the partition given."""

    def __init__(self, ns: Namespace) -> None:
        self._producer = kafka_producer(ns.settings, max_request_size=2 * 1024 * 1024)

    async def __aenter__(self) -> RawSender:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers
    ) -> int:
        meta = await self._producer.send_and_wait(
            topic, value=value, key=key, headers=headers, partition=partition
        )
        return int(meta.offset)

    async def send_unencodable(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: Headers
    ) -> int:
        batch = self._producer.create_batch()
        batch._builder = _DefaultRecordBatchBuilderPy(  # what a foreign client could write
            2, 0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=0,
            batch_size=1024 * 1024,
        )  # fmt: skip
        assert batch.append(key=key, value=value, timestamp=None, headers=headers) is not None
        batch.close()
        meta = await (await self._producer.send_batch(batch, topic, partition=partition))
        return int(meta.offset)


async def read_dlq(ns: Namespace) -> list[KafkaRecord]:
    """Every record on the namespace's DLQ topic, from the beginning to its end now."""
    topic = ns.topic("dlq")
    consumer = kafka_consumer(ns.settings)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ns.settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[KafkaRecord] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(record_from_kafka(r) for r in records)
        return found
    finally:
        await consumer.stop()


def by_position(letters: list[KafkaRecord]) -> dict[tuple[str, int, int], list[KafkaRecord]]:
    out: dict[tuple[str, int, int], list[KafkaRecord]] = {}
    for letter in letters:
        why = reason_of(letter)
        out.setdefault((why["topic"], int(why["partition"]), int(why["offset"])), []).append(letter)
    return out


async def committed_to_the_end(ns: Namespace, group: str, topic: str) -> bool:
    consumer = kafka_consumer(ns.settings, group_id=group)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ns.settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        return all([(await consumer.committed(tp) or 0) >= ends[tp] for tp in partitions])
    finally:
        await consumer.stop()


async def rewind_group(ns: Namespace, group: str, topic: str) -> None:
    """What a crash after the dead letters' transactions but before any offset commit leaves:
    the group's offsets back at the start (the service is stopped; the group is empty)."""
    consumer = kafka_consumer(ns.settings, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ns.settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.commit(dict.fromkeys(partitions, 0))
    finally:
        await consumer.stop()


async def stop_event_log(ns: Namespace) -> None:
    """Stop the namespace's EventLog (it would survive the records, but these tests read the
    DLQ themselves and need no second reader). Safe at any point, right after it started."""
    await ns.log.stop()


def alive(running: RunningService) -> bool:
    return bool(running._tasks) and not any(t.done() for t in running._tasks)


def packaged(service: str, version: str, commit: str = "abc1234") -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service=service, version=version, digest=digest(service + version), commit=commit
    )


Kind = tuple[str, bytes | None, Any, Headers, list[str]]


def malformed(service: str, good: KafkaRecord) -> list[Kind]:
    """(kind, key, value, headers, words the reason must hold); a value of None is a tombstone,
    headers with a RawName are sent by the pure-Python builder."""
    key = service.encode()
    value = good.value or b""
    hs: Headers = list(good.headers)

    def with_headers(**changed: bytes | None) -> Headers:
        return [(k, changed.get(k, v)) for k, v in hs]

    def without(name: str) -> Headers:
        return [(k, v) for k, v in hs if k != name]

    def doc_with(path: list[str], new: Any) -> bytes:
        d = json.loads(value)
        at = d
        for step in path[:-1]:
            at = at[step]
        if new is KeyError:
            del at[path[-1]]
        else:
            at[path[-1]] = new
        return json.dumps(d).encode()

    deep = 30_000  # within the namespace's 64 KiB limit, far past any sane nesting
    return [
        # headers
        ("null ce_type", key, value, with_headers(ce_type=None), ["header ce_type is null"]),
        ("null ce_id", key, value, with_headers(ce_id=None), ["header ce_id is null"]),
        ("null ce_source", key, value, with_headers(ce_source=None), ["ce_source is null"]),
        ("null ce_specversion", key, value, with_headers(ce_specversion=None), ["is null"]),
        (
            "ce_type not UTF-8",
            key,
            value,
            with_headers(ce_type=b"\xff\xfe"),
            ["ce_type b'\\xff\\xfe' is not UTF-8"],
        ),
        (
            "content-type not UTF-8",
            key,
            value,
            with_headers(**{"content-type": b"\xc3\x28"}),
            ["content-type", "not UTF-8"],
        ),
        (
            "header name not UTF-8",
            key,
            value,
            [*hs, (RawName(b"\xff\xfeX"), b"v")],
            ["a header name is not UTF-8 text", "invalid start byte"],
        ),
        (
            "two ce_types",
            key,
            value,
            [*hs, ("ce_type", b"dev.cdevents.artifact.published.0.3.0")],
            ["ce_type is given twice"],
        ),
        ("two ce_ids", key, value, [*hs, ("CE_ID", b"another")], ["ce_id is given twice"]),
        (
            "huge header",
            key,
            value,
            [*hs, ("x-blob", b"b" * 70_000)],
            ["headers are", "over the limit of 65536"],
        ),
        ("NUL in a header name", key, value, [*hs, ("x\x00y", b"1")], ["NUL"]),
        ("NUL in a header value", key, value, with_headers(ce_source=b"ci\x00"), ["NUL"]),
        ("no headers", key, value, [], ["missing header ce_specversion"]),
        ("no ce_type", key, value, without("ce_type"), ["missing header ce_type"]),
        ("specversion 0.3", key, value, with_headers(ce_specversion=b"0.3"), ["CloudEvents 1.0"]),
        (
            "structured mode",
            key,
            value,
            with_headers(**{"content-type": b"application/cloudevents+json"}),
            ["structured mode"],
        ),
        (
            "text/plain",
            key,
            value,
            with_headers(**{"content-type": b"text/plain"}),
            ["must be application/json"],
        ),
        (
            "unknown type",
            key,
            value,
            with_headers(ce_type=b"dev.cdevents.spaceship.launched.0.1.0"),
            ["unknown event type"],
        ),
        # binary mode: content-type is what says the value is JSON
        ("no content-type", key, value, without("content-type"), ["missing header content-type"]),
        (
            "null content-type",
            key,
            value,
            with_headers(**{"content-type": None}),
            ["header content-type is null"],
        ),
        # ce_time: optional, but held to the rule of context.timestamp when given
        (
            "ce_time year 9999",
            key,
            value,
            with_headers(ce_time=b"9999-12-31T23:59:59Z"),
            ["header ce_time", "more than a day in the future"],
        ),
        (
            "ce_time 1970",
            key,
            value,
            with_headers(ce_time=b"1970-01-01T00:00:00Z"),
            ["header ce_time", "before 2000"],
        ),
        (
            "ce_time not a time",
            key,
            value,
            with_headers(ce_time=b"yesterday"),
            ["header ce_time 'yesterday'", "not an RFC 3339 time"],
        ),
        ("null ce_time", key, value, with_headers(ce_time=None), ["header ce_time is null"]),
        # keys
        ("binary key", b"\xff\x00\xfe", value, hs, ["key", "not UTF-8 text"]),
        ("huge key", b"k" * 5000, value, hs, ["key is 5000 bytes", "over the limit of 1024"]),
        ("null key, garbage value", None, b"\x00\x01garbage", hs, ["not valid JSON"]),
        # values
        ("tombstone", key, None, hs, ["no value (a tombstone?)"]),
        ("empty value", key, b"", hs, ["not valid JSON"]),
        ("garbage bytes", key, bytes(range(256)), hs, ["not valid JSON"]),
        ("not JSON", key, b"hello, world", hs, ["not valid JSON"]),
        ("a JSON list", key, b"[1, 2, 3]", hs, ["Input should be an object"]),
        ("JSON null", key, b"null", hs, ["Input should be an object"]),
        ("an empty object", key, b"{}", hs, ["context: is required but missing"]),
        ("deeply nested", key, b"[" * deep + b"]" * deep, hs, ["recursion limit exceeded"]),
        (
            "huge value",
            key,
            b"{" + b" " * (70 * 1024) + b"}",
            hs,
            ["over the limit of 65536 bytes"],
        ),
        ("escaped NUL", key, value.replace(b'"abc1234"', b'"abc\\u0000"'), hs, ["NUL"]),
        (
            "raw NUL",
            key,
            value.replace(b'"abc1234"', b'"abc\x00"'),
            hs,
            ["not valid JSON", "control character"],
        ),
        ("latin-1", key, value.replace(b'"abc1234"', b'"abc\xe9"'), hs, ["not valid JSON"]),
        ("UTF-16", key, value.decode().encode("utf-16"), hs, ["not valid JSON"]),
        (
            "lone surrogate",
            key,
            value.replace(b'"abc1234"', b'"\\udc00"'),
            hs,
            ["not valid JSON"],
        ),
        (
            "number out of range",
            key,
            value.replace(b'"abc1234"', b"9" * 5000),
            hs,
            ["number out of range"],
        ),
        (
            "ce_id disagrees",
            key,
            value,
            with_headers(ce_id=b"not-the-id"),
            ["disagrees with header ce_id"],
        ),
        (
            "schema",
            key,
            doc_with(["subject", "content", "change"], KeyError),
            hs,
            ["subject.content.change: is required but missing"],
        ),
        (
            "wrong type of field",
            key,
            doc_with(["context", "timestamp"], ["x"]),
            hs,
            ["context.timestamp"],
        ),
    ]


async def test_every_malformed_record_is_dead_lettered_and_the_partitions_go_on(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    await stop_event_log(ns)  # a plain aiokafka reader: the record it cannot decode stops it
    topic, group = ns.topic("artifacts"), ns.settings.group_id("artifacts")
    service = unique_service()
    good_before = [packaged(service, f"1.0.{i}") for i in range(3)]
    good_after = [packaged(service, f"2.0.{i}") for i in range(5)]
    kinds = malformed(service, encode(good_before[0], topic=topic))
    assert len(kinds) >= 30
    sent: dict[str, tuple[int, bytes | None, bytes | None, list[str]]] = {}

    async with ns.service() as running, RawSender(ns) as raw:

        async def send_good(event: ArtifactPackaged, partition: int, key: bytes | None) -> None:
            record = encode(event, topic=topic)
            await raw.send(topic, partition, key, record.value, list(record.headers))

        # good events on every partition first: the fetch that fails on partition 0 may
        # already have taken records of the others from the client's buffer
        for i, event in enumerate(good_before):
            await send_good(event, i % 3, service.encode())
        for name, key, value, headers, words in kinds:
            if any(isinstance(h[0], RawName) for h in headers):
                offset = await raw.send_unencodable(topic, 0, key or b"", value, headers)
            else:
                offset = await raw.send(topic, 0, key, value, headers)
            sent[name] = (offset, key, value, words)
        for i, event in enumerate(good_after):  # after the poison, on its partition and others
            await send_good(event, i % 3, None if i == 4 else service.encode())  # null key: fine

        versions = sorted(e.ref().version for e in good_before + good_after)

        async def all_registered() -> bool:
            rows = await ns.sql(
                "artifacts", "SELECT version FROM artifacts WHERE service = $1", service
            )
            return sorted(r["version"] for r in rows) == versions

        await eventually(all_registered, "every good build registered")

        async def all_dead() -> list[KafkaRecord]:
            letters = await read_dlq(ns)
            return letters if len(letters) >= len(kinds) else []

        letters = await eventually(all_dead, f"{len(kinds)} dead letters")
        await eventually(lambda: committed_to_the_end(ns, group, topic), "offsets committed")
        assert alive(running), "the consumer (or relay) stopped"

    found = by_position(letters)
    assert len(letters) == len(kinds)  # one each, no more
    for name, (offset, key, value, words) in sent.items():
        [letter] = found[(topic, 0, offset)]
        why = reason_of(letter)
        assert why["stage"] == "decode", name
        assert why["group"] == group, name
        for word in words:
            assert word in why["error"], (name, why["error"])
        if name == "header name not UTF-8":  # the client gives nothing of it but the name
            assert letter.key is None and letter.value == b"\xff\xfeX"
        else:
            assert (letter.key, letter.value) == (key, value), name  # the original bytes
    null_kept = found[(topic, 0, sent["null ce_type"][0])][0]
    assert ("ce_type", None) in null_kept.headers  # a null header stays null on the DLQ

    # A crash after the dead letters were committed to Postgres but before the offsets were
    # committed to Kafka: everything is read again, and nothing is dead-lettered or handled
    # twice.
    await rewind_group(ns, group, topic)
    marker = packaged(service, "3.0.0")
    async with ns.service() as running, RawSender(ns) as raw:
        record = encode(marker, topic=topic)
        await raw.send(topic, 0, service.encode(), record.value, list(record.headers))
        versions.append("3.0.0")
        await eventually(all_registered, "the marker registered after the restart")
        await eventually(lambda: committed_to_the_end(ns, group, topic), "offsets committed")
        assert alive(running)
    assert len(await read_dlq(ns)) == len(kinds)
    handled = await ns.sql("artifacts", "SELECT count(*) AS n FROM inbox WHERE outcome = 'handled'")
    assert handled[0]["n"] == len(versions)
    published = await ns.sql(
        "artifacts", "SELECT count(*) AS n FROM outbox WHERE topic = $1", topic
    )
    assert published[0]["n"] == len(versions)  # one artifact.published per build, no more


async def test_a_conflicting_duplicate_is_dead_lettered_and_a_redelivery_skipped(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    original = packaged(service, "1.0.0", commit="aaaa111")
    await ns.publish(original)

    async def registered() -> list[Any]:
        return await ns.sql(
            "artifacts", "SELECT version, commit FROM artifacts WHERE service = $1", service
        )

    await eventually(registered, "the original registered")
    # the same source and id, other content (another commit), and an identical copy
    impostor = ArtifactPackaged.model_validate_json(
        original.to_json().replace(b'"aaaa111"', b'"bbbb222"')
    )
    assert impostor.id == original.id and impostor != original
    impostor_record = encode(impostor, topic=ns.topic("artifacts"))
    await ns.send_raw([impostor_record, encode(original, topic=ns.topic("artifacts"))])
    await ns.publish(packaged(service, "1.0.1"))  # same key, same partition: after both

    def letters() -> list[KafkaRecord]:
        """the conflicting duplicate dead-lettered"""
        return [d for d in ns.log.dead_letters() if d.key == service.encode()]

    await eventually(lambda: _rows_for(ns, service, "1.0.1"), "the build after them")
    [letter] = await ns.log.wait_for(letters)
    why = reason_of(letter)
    assert why["stage"] == "duplicate"
    assert "conflicting duplicate" in why["error"] and original.id in why["error"]
    assert content_digest(original) in why["error"]  # what was handled
    assert content_digest(impostor) in why["error"]  # and what this record is
    assert letter.value == impostor_record.value
    assert [tuple(r) for r in await registered() if r["version"] == "1.0.0"] == [
        ("1.0.0", "aaaa111")
    ]
    announced = [
        e for e in ns.log.events(ArtifactPublished) if e.artifact_label() == f"{service}@1.0.0"
    ]
    assert len(announced) == 1  # the identical copy was skipped, silently

    # An inbox row from before the digest column: unknown content, so skipped as before.
    await ns.sql("artifacts", "UPDATE inbox SET digest = NULL WHERE id = $1", original.id)
    await ns.send_raw([impostor_record])
    await ns.publish(packaged(service, "1.0.2"))
    await eventually(lambda: _rows_for(ns, service, "1.0.2"), "the next build")
    assert letters() == [letter]


async def _rows_for(ns: Namespace, service: str, version: str) -> list[Any]:
    return await ns.sql(
        "artifacts", "SELECT 1 FROM artifacts WHERE service = $1 AND version = $2", service, version
    )


async def test_lockstep_tail_says_where_an_undecodable_record_is_and_goes_on(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    topic, service = ns.topic("artifacts"), unique_service()
    before, after = packaged(service, "1.0.0"), packaged(service, "1.0.1")
    async with RawSender(ns) as raw:
        first = encode(before, topic=topic)
        await raw.send(topic, 0, first.key, first.value, list(first.headers))
        bad = await raw.send_unencodable(
            topic, 0, first.key or b"", first.value or b"",
            [*first.headers, (RawName(b"\xff\xfeX"), b"v")],
        )  # fmt: skip
        second = encode(after, topic=topic)
        await raw.send(topic, 0, second.key, second.value, list(second.headers))
    env = {**os.environ, "LOCKSTEP_NAMESPACE": ns.settings.namespace,
           "LOCKSTEP_KAFKA_BOOTSTRAP": ns.settings.kafka_bootstrap, "COLUMNS": "400"}  # fmt: skip
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "tail", "artifacts", "--from-beginning",
         "--count", "3", "--idle", "20"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    assert service in lines[0] and "tag=1.0.0" in lines[0]
    assert lines[1].startswith(f"UNREADABLE {topic}[0]@{bad}: ")
    assert "a header name is not UTF-8 text" in lines[1]
    assert service in lines[2] and "tag=1.0.1" in lines[2]  # and it went on past it
    # the tests' reader, too, went past it and kept its position
    await ns.log.wait_for(lambda: [u for u in ns.log.unreadable if u.offset == bad], 30)


async def test_an_event_log_stopped_at_any_point_leaves_no_consumer_behind(
    ns: Namespace,
) -> None:
    log = EventLog(ns.settings)
    await log.stop()  # never started
    await log.start()
    await log.stop()  # before its task took a step: its consumer is closed all the same
    await log.stop()  # and again
    await log.start()
    await asyncio.sleep(0.3)
    await log.stop()
