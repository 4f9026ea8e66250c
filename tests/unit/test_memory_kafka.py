"""The in-memory twin of the broker (shared.bus.memory), on its own: no server needed. How it
behaves beside the real broker is the bus suite's (tests/integration/test_bus_suite.py)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)

from events import topics
from events.kafka import SafeFetcher
from shared.bus.memory import (
    BROKER_MAX_MESSAGE_BYTES,
    MemoryKafka,
    MemoryTransport,
    NotModelled,
    partition_for,
)
from shared.bus.producer import new_kafka_producer
from shared.settings import Settings

SETTINGS = Settings(namespace="unit_twin", topic_partitions=3)


def consumer(t: MemoryTransport, *topics_: str, group: str | None = "g") -> object:
    return t.consumer(
        SETTINGS, *topics_, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )


# Kafka's own vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2), signed 32-bit.
MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_a_key_goes_to_the_partition_kafkas_default_partitioner_picks() -> None:
    for key, signed in MURMUR2.items():
        assert partition_for(key, 1000) == (signed & 0x7FFFFFFF) % 1000
    kafka = MemoryKafka()
    kafka.create_topic("t", 6)
    for key in MURMUR2:
        meta = kafka.append("t", b"v", key)
        assert meta.partition == (MURMUR2[key] & 0x7FFFFFFF) % 6


async def test_records_keep_their_order_offsets_and_headers_per_partition() -> None:
    t = MemoryTransport()
    t.kafka.create_topic("t", 3)
    producer = t.producer(SETTINGS)
    await producer.start()
    for i in range(5):
        await (
            await producer.send("t", value=b"%d" % i, key=b"k", headers=[("h", b"x"), ("n", None)])
        )
    c = consumer(t, "t")
    await c.start()
    got = await c.getmany(timeout_ms=100)
    [(tp, records)] = got.items()
    assert tp.partition == partition_for(b"k", 3)
    assert [r.value for r in records] == [b"0", b"1", b"2", b"3", b"4"]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert records[0].headers == (("h", b"x"), ("n", None)) and records[0].key == b"k"
    await c.stop()


async def test_a_fetch_waits_for_records_and_wakes_when_one_arrives() -> None:
    t = MemoryTransport()
    t.kafka.create_topic("t", 1)
    c = consumer(t, "t")
    await c.start()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, t.kafka.append, "t", b"late")
    began = loop.time()
    got = await c.getmany(timeout_ms=5000)
    assert [r.value for rs in got.values() for r in rs] == [b"late"]
    assert loop.time() - began < 1
    assert await c.getmany(timeout_ms=50) == {}
    await c.stop()


async def test_a_group_splits_partitions_and_hands_over_from_the_committed_offset() -> None:
    t = MemoryTransport()
    t.kafka.create_topic("t", 4)
    for p in range(4):
        for i in range(3):
            t.kafka.append("t", b"%d-%d" % (p, i), partition=p)
    a = consumer(t, "t")
    await a.start()
    assert len(a.assignment()) == 4
    got = await a.getmany(timeout_ms=10)
    assert sum(len(r) for r in got.values()) == 12
    await a.commit({TopicPartition("t", p): 1 for p in range(4)})  # one of three handled each
    b = consumer(t, "t")
    await b.start()
    # a's commit from before b joined would now fail: the group has rebalanced
    with pytest.raises(CommitFailedError):
        await a.commit({TopicPartition("t", 0): 3})
    await a.getmany(timeout_ms=10)  # a poll: a takes up its new share
    assert a.assignment() | b.assignment() == set(t.kafka.partitions("t"))
    assert not a.assignment() & b.assignment() and len(b.assignment()) == 2
    b_share = b.assignment()
    got_b = await b.getmany(timeout_ms=10)
    assert sorted(r.offset for rs in got_b.values() for r in rs) == [1, 1, 2, 2]  # redelivered
    await b.commit({tp: 3 for tp in b.assignment()})
    await b.stop()  # its partitions go back to a, from where b committed
    got_a = await a.getmany(timeout_ms=10)
    assert len(a.assignment()) == 4
    # a starts again at every partition's committed offset: its own 1, b's 3 (nothing left)
    again = sorted((tp.partition, r.offset) for tp, rs in got_a.items() for r in rs)
    mine = sorted(p for p in range(4) if TopicPartition("t", p) not in b_share)
    assert again == [(p, o) for p in mine for o in (1, 2)]
    await a.stop()


async def test_what_a_member_did_not_commit_is_read_again_by_the_next() -> None:
    t = MemoryTransport()
    t.kafka.create_topic("t", 1)
    for i in range(4):
        t.kafka.append("t", b"%d" % i)
    first = consumer(t, "t")
    await first.start()
    await first.getmany(timeout_ms=10)  # read all four, committed two
    await first.commit({TopicPartition("t", 0): 2})
    await first.stop()
    second = consumer(t, "t")
    await second.start()
    got = await second.getmany(timeout_ms=10)
    assert [r.value for r in got[TopicPartition("t", 0)]] == [b"2", b"3"]
    assert await second.committed(TopicPartition("t", 0)) == 2
    await second.stop()


async def test_record_size_limits_are_the_real_settings() -> None:
    t = MemoryTransport()
    t.kafka.ensure_topics(SETTINGS)
    producer = new_kafka_producer(SETTINGS, "relay", t)  # the bus's own producer options
    await producer.start()
    events_topic = SETTINGS.topic("artifacts")
    dlq = SETTINGS.topic(topics.DLQ)
    # the broker's max.message.bytes counts a batch of one: its 61-byte header, the record's
    # length (3-byte varint), attributes and two deltas (3), null key (1), the value's length
    # (3-byte varint), no headers (1)
    just_fits = BROKER_MAX_MESSAGE_BYTES - 61 - 3 - 3 - 1 - 3 - 1
    assert (await (await producer.send(events_topic, value=b"x" * just_fits))).offset == 0
    refused = await producer.send(events_topic, value=b"x" * (just_fits + 1))
    with pytest.raises(MessageSizeTooLargeError):
        await refused
    assert (await (await producer.send(dlq, value=b"x" * 1_500_000))).offset == 0
    with pytest.raises(MessageSizeTooLargeError):  # over the producer's max_request_size
        await producer.send(dlq, value=b"x" * (topics.DLQ_MAX_MESSAGE_BYTES + 1))
    with pytest.raises(UnknownTopicOrPartitionError):  # no auto-creation, as the broker
        await producer.send("nowhere", value=b"x")


def test_what_it_does_not_model_is_refused_loudly() -> None:
    t = MemoryTransport()
    with pytest.raises(NotModelled, match="transactional_id"):
        t.producer(SETTINGS, transactional_id="tx")
    with pytest.raises(NotModelled, match="auto-commit"):
        t.consumer(SETTINGS, "t", group_id="g")
    with pytest.raises(NotModelled, match="read_committed"):
        t.consumer(SETTINGS, enable_auto_commit=False, isolation_level="read_committed")
    with pytest.raises(NotModelled, match="session_timeout_ms"):
        t.consumer(SETTINGS, enable_auto_commit=False, session_timeout_ms=1000)


async def test_a_header_name_not_utf8_fails_the_fetch_as_aiokafkas_and_is_stepped_past() -> None:
    t = MemoryTransport()
    t.kafka.create_topic("t", 1)
    t.kafka.append("t", b"before")
    t.kafka.append_raw("t", b"bad", headers=[(b"\xff\xfe", b"v")])
    t.kafka.append("t", b"after")
    c = consumer(t, "t")
    await c.start()
    with pytest.raises(UnicodeDecodeError):
        await c.getmany(timeout_ms=10)
    assert await c.position(TopicPartition("t", 0)) == 0  # a failed fetch moves nothing
    fetched = await SafeFetcher(c).getmany(timeout_ms=10)
    batch = fetched[TopicPartition("t", 0)]
    assert [r.value for r in batch.records] == [b"before", b"after"]
    assert [u.offset for u in batch.unreadable] == [1] and batch.next_offset == 3
    await c.stop()
