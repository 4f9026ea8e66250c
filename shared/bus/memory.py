"""An in-memory twin of the Kafka broker, for tests of handlers and of the bus itself.

    kafka = MemoryKafka()
    kafka.ensure_topics(settings)              # what `lockstep topics ensure` creates
    service = RunningService(spec, settings, transport=MemoryTransport(kafka))

``MemoryTransport`` is a ``shared.bus.transport.Transport``: everything above the clients
(inbox, outbox, relay, dead letters, retries, batching) is the bus's own code, unchanged; only
the broker is replaced. The clients it makes have exactly the face of aiokafka's that the bus
uses, and nothing more (an option or method the bus starts to use that the twin does not know
is refused loudly, not ignored):

consumer
    ``start``, ``stop``, ``getmany(*tps, timeout_ms=, max_records=)``, ``assignment``,
    ``assign``, ``position``, ``seek``, ``seek_to_beginning``, ``committed``, ``commit``,
    ``beginning_offsets``, ``end_offsets``; a group's members share its topics' partitions
    (aiokafka's default round-robin assignor) and the partitions are dealt again whenever a
    member joins or leaves (eager: every member starts again from the group's committed
    offsets; a commit from before the rebalance fails with ``CommitFailedError``).
producer
    ``start``, ``stop``, ``send`` (a future of a ``RecordMetadata``); ``enable_idempotence``
    and ``acks="all"`` are honoured by construction (an append is acknowledged once, never
    duplicated); a ``transactional_id`` is refused.

As the real broker: a key goes to the partition Kafka's default partitioner picks (murmur2 of
the key, as the Java client and aiokafka compute it); records have offsets, timestamps and
headers (names stored as bytes, decoded strictly on fetch, so a header name that is not
UTF-8 fails the fetch as aiokafka's does); a record is refused with
``MessageSizeTooLargeError`` over the producer's ``max_request_size`` (aiokafka's estimate)
or over its topic's ``max.message.bytes`` (the broker's default 1048588, the DLQ's
``events.topics.DLQ_MAX_MESSAGE_BYTES``, measured as the broker measures: a record batch of
one); a topic that does not exist is ``UnknownTopicOrPartitionError`` (topics are not created
on first use: the broker has ``auto.create.topics.enable=false``).

What it does NOT model (docs/testing.md): logins, SASL and ACLs (every client may do
everything); broker outages, leader changes, fencing, timeouts and lost acknowledgements; Kafka
transactions and ``read_committed``; retention, compaction and log truncation; session
timeouts (a member leaves when it stops, not when it goes quiet); static membership and
cooperative rebalancing; compression and the wire format (a record is never corrupt unless a
test appends it so with ``append_raw``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    ConsumerStoppedError,
    IllegalOperation,
    IllegalStateError,
    MessageSizeTooLargeError,
    NoOffsetForPartitionError,
    ProducerClosed,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import ConsumerRecord, RecordMetadata

from events import topics
from shared.settings import Settings

__all__ = [
    "BROKER_MAX_MESSAGE_BYTES",
    "MemoryConsumer",
    "MemoryKafka",
    "MemoryProducer",
    "MemoryTransport",
    "NotModelled",
    "partition_for",
]

# Kafka's default message.max.bytes (infra/kafka/server.properties does not change it): the
# max.message.bytes of every topic that does not set its own.
BROKER_MAX_MESSAGE_BYTES = 1048588
_AIOKAFKA_MAX_REQUEST_SIZE = 1048576  # aiokafka's default max_request_size
_BATCH_HEADER = 61  # a v2 record batch's header (aiokafka: DefaultRecordBatchBuilder.HEADER_STRUCT)


class NotModelled(NotImplementedError):
    """The bus asked the twin for something it does not model (a transaction, auto-commit,
    an option it does not know): refused, so that a test cannot pass on a pretence."""


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def batch_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, Any]]) -> int:
    """The size of a record batch holding this record alone, as the broker measures it
    against ``max.message.bytes``."""
    body = 1 + 1 + 1 + DefaultRecordBatchBuilder.size_of(key, value, list(headers))
    return int(_BATCH_HEADER + body + _varint_size(body))


def _varint_size(n: int) -> int:
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


@dataclass(frozen=True)
class _Stored:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[bytes, bytes | None], ...]


@dataclass
class _Topic:
    name: str
    partitions: list[list[_Stored]]
    max_message_bytes: int
    round_robin: itertools.count[int] = field(default_factory=itertools.count)


@dataclass
class _Group:
    name: str
    members: list[MemoryConsumer] = field(default_factory=list)
    generation: int = 0
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryKafka:
    """One broker's topics and consumer groups, in this process's memory."""

    def __init__(self, *, default_partitions: int = 6) -> None:
        self.default_partitions = default_partitions
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count(1)
        self._waiters: list[asyncio.Future[None]] = []
        self.rebalances = 0  # how many times a group's partitions were dealt again

    # -- topics --

    def create_topic(
        self, name: str, partitions: int | None = None, *, max_message_bytes: int | None = None
    ) -> None:
        """Create ``name`` (no-op if it exists, as ``ensure_topics`` is)."""
        if name in self._topics:
            return
        count = partitions or self.default_partitions
        self._topics[name] = _Topic(
            name, [[] for _ in range(count)], max_message_bytes or BROKER_MAX_MESSAGE_BYTES
        )
        for group in self._groups.values():  # a member subscribed to it gets its share
            if any(name in m._subscription for m in group.members):
                self._rebalance(group)

    def ensure_topics(self, settings: Settings) -> list[str]:
        """The namespace's topics, as ``shared.bus.admin.ensure_topics`` creates them (its
        partition count; the DLQ's larger record limit); the names created."""
        created = []
        for logical in topics.ALL:
            name = settings.topic(logical)
            if name not in self._topics:
                limit = topics.DLQ_MAX_MESSAGE_BYTES if logical == topics.DLQ else None
                self.create_topic(name, settings.topic_partitions, max_message_bytes=limit)
                created.append(name)
        return created

    def delete_topic(self, name: str) -> None:
        self._topics.pop(name, None)
        for group in self._groups.values():
            group.committed = {tp: o for tp, o in group.committed.items() if tp.topic != name}
            if any(name in m._subscription for m in group.members):
                self._rebalance(group)

    def topics(self) -> list[str]:
        return sorted(self._topics)

    def partitions(self, topic: str) -> list[TopicPartition]:
        t = self._topic(topic)
        return [TopicPartition(topic, p) for p in range(len(t.partitions))]

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return t

    def _log(self, tp: TopicPartition) -> list[_Stored]:
        t = self._topic(tp.topic)
        if not 0 <= tp.partition < len(t.partitions):
            raise UnknownTopicOrPartitionError(f"{tp} does not exist")
        return t.partitions[tp.partition]

    # -- writing --

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes | None]] = (),
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append one record as the broker would take it from a producer (refused with
        ``MessageSizeTooLargeError`` over the topic's ``max.message.bytes``)."""
        for name, v in (hs := list(headers)):
            if not isinstance(name, str) or not isinstance(v, bytes | None):
                raise TypeError(f"a header is ({name!r}, {v!r}), not (str, bytes)")
        size = batch_size(key, value, hs)
        t = self._topic(topic)
        if size > t.max_message_bytes:
            raise MessageSizeTooLargeError(
                f"the record batch is {size} bytes, over {topic}'s max.message.bytes "
                f"({t.max_message_bytes})"
            )
        raw = tuple((n.encode("utf-8"), v) for n, v in hs)
        return self.append_raw(
            topic, value, key, raw, partition=partition, timestamp_ms=timestamp_ms
        )

    def append_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[tuple[bytes, bytes | None]] = (),
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Append a record with header names as raw bytes, unchecked (what another client
        might write: a name that is not UTF-8 makes the consumer's fetch fail)."""
        if key is not None and not isinstance(key, bytes):
            raise TypeError(f"a key is bytes, not {type(key).__name__}")
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"a value is bytes, not {type(value).__name__}")
        t = self._topic(topic)
        if partition is None:
            if key is None:  # aiokafka: any available partition; here, each in turn
                partition = next(t.round_robin) % len(t.partitions)
            else:
                partition = partition_for(key, len(t.partitions))
        tp = TopicPartition(topic, partition)
        log = self._log(tp)
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        log.append(_Stored(len(log), ts, key, value, tuple(headers)))
        self._wake()
        return RecordMetadata(topic, partition, tp, len(log) - 1, ts, 0, 0)

    def records(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of ``topic``, partition by partition, in offset order (for tests)."""
        out = []
        for tp in self.partitions(topic):
            out += [_consumer_record(tp, s) for s in self._log(tp)]
        return out

    def end_offset(self, tp: TopicPartition) -> int:
        return len(self._log(tp))

    # -- groups --

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        g = self._groups.get(group)
        return None if g is None else g.committed.get(tp)

    def members(self, group: str) -> list[MemoryConsumer]:
        g = self._groups.get(group)
        return list(g.members) if g is not None else []

    def delete_group(self, group: str) -> None:
        g = self._groups.get(group)
        if g is not None and g.members:
            raise IllegalStateError(f"group {group!r} has members")
        self._groups.pop(group, None)

    def _join(self, group: str, member: MemoryConsumer) -> None:
        g = self._groups.setdefault(group, _Group(group))
        g.members.append(member)
        self._rebalance(g)

    def _leave(self, group: str, member: MemoryConsumer) -> None:
        g = self._groups.get(group)
        if g is not None and member in g.members:
            g.members.remove(member)
            self._rebalance(g)

    def _rebalance(self, g: _Group) -> None:
        """Deal the partitions of the members' topics out again (aiokafka's default
        ``RoundRobinPartitionAssignor``: every partition in order, to the next member in
        member-id order that is subscribed to its topic)."""
        g.generation += 1
        self.rebalances += 1
        members = sorted(g.members, key=lambda m: m.member_id)
        shares: dict[int, list[TopicPartition]] = {m.member_id: [] for m in members}
        wanted = sorted({t for m in members for t in m._subscription if t in self._topics})
        turn = itertools.cycle(members)
        for topic in wanted:
            for tp in self.partitions(topic):
                while True:
                    m = next(turn)
                    if topic in m._subscription:
                        shares[m.member_id].append(tp)
                        break
        for m in members:
            m._reassigned(g.generation, shares[m.member_id])
        self._wake()

    def _check_commit(
        self, group: str, member: MemoryConsumer, generation: int, offsets: dict[Any, int]
    ) -> None:
        g = self._groups.get(group)
        if g is None or member not in g.members or generation != g.generation:
            raise CommitFailedError(
                "Commit cannot be completed since the group has already rebalanced and "
                "assigned the partitions to another member"
            )
        for tp in offsets:
            if tp not in member._assignment:
                raise CommitFailedError(f"{tp} is not assigned to this member")

    # -- waiting for records --

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _changed(self, timeout_s: float) -> None:
        """Until something is appended or a group rebalances, or ``timeout_s``."""
        if timeout_s <= 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def _consumer_record(tp: TopicPartition, s: _Stored) -> ConsumerRecord[bytes, bytes]:
    headers = tuple((n.decode("utf-8"), v) for n, v in s.headers)  # strict, as aiokafka's
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=s.offset,
        timestamp=s.timestamp,
        timestamp_type=0,
        key=s.key,
        value=s.value,
        checksum=None,
        serialized_key_size=-1 if s.key is None else len(s.key),
        serialized_value_size=-1 if s.value is None else len(s.value),
        headers=headers,
    )


def _refuse_unknown(kind: str, config: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        raise NotModelled(
            f"the in-memory {kind} does not model {', '.join(unknown)}; model it in "
            "shared/bus/memory.py (and its tests) before the bus relies on it"
        )


_CONSUMER_OPTIONS = {
    "group_id",
    "client_id",
    "enable_auto_commit",
    "auto_offset_reset",
    "max_partition_fetch_bytes",
    "fetch_max_wait_ms",
    "request_timeout_ms",
    "max_poll_records",
    "isolation_level",
}
_PRODUCER_OPTIONS = {
    "client_id",
    "enable_idempotence",
    "acks",
    "linger_ms",
    "max_request_size",
    "request_timeout_ms",
    "transactional_id",
}


class MemoryConsumer:
    """The face of ``AIOKafkaConsumer`` the bus uses, on a ``MemoryKafka``."""

    def __init__(self, kafka: MemoryKafka, *topics_: str, **config: Any) -> None:
        _refuse_unknown("consumer", config, _CONSUMER_OPTIONS)
        if config.get("enable_auto_commit", True):
            raise NotModelled(
                "auto-commit is not modelled (the bus commits what it has handled): pass "
                "enable_auto_commit=False"
            )
        if config.get("isolation_level", "read_uncommitted") != "read_uncommitted":
            raise NotModelled("transactions (isolation_level='read_committed') are not modelled")
        self._kafka = kafka
        self.member_id = next(kafka._member_ids)
        self.group_id: str | None = config.get("group_id")
        self.client_id: str = config.get("client_id") or f"memory-consumer-{self.member_id}"
        self._reset = config.get("auto_offset_reset", "latest")
        if self._reset not in ("earliest", "latest", "none"):
            raise ValueError(f"auto_offset_reset {self._reset!r}")
        self._partition_bytes = int(config.get("max_partition_fetch_bytes", 1048576))
        self._max_poll = config.get("max_poll_records")
        self._subscription: frozenset[str] = frozenset(topics_)
        self._assignment: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._generation = 0  # the group's generation this member last heard of
        self._pending: tuple[int, list[TopicPartition]] | None = None  # a rebalance not seen
        self._manual = False
        self._started = False
        self._closed = False
        self._fair = itertools.count()

    # -- life --

    async def start(self) -> None:
        if self._closed:
            raise IllegalStateError("a stopped consumer cannot start again")
        self._started = True
        if self._subscription:
            if self.group_id is None:  # no group: every partition of the topics is ours
                self._manual = True
                self._assignment = [
                    tp for t in sorted(self._subscription) for tp in self._kafka.partitions(t)
                ]
            else:
                self._kafka._join(self.group_id, self)
                self._sync()

    async def stop(self) -> None:
        """Leave the group (its partitions dealt again); nothing is committed."""
        if self._closed:
            return
        self._closed = True
        if self.group_id is not None and not self._manual and self._subscription:
            self._kafka._leave(self.group_id, self)
        self._assignment, self._positions = [], {}
        self._kafka._wake()  # a fetch waiting in this consumer ends

    def _alive(self) -> None:
        if self._closed:
            raise ConsumerStoppedError()
        if not self._started:
            raise IllegalStateError("the consumer is not started")

    # -- groups --

    def _reassigned(self, generation: int, partitions: list[TopicPartition]) -> None:
        self._pending = (generation, partitions)

    def _sync(self) -> None:
        """Take up the group's latest assignment (at a poll, as aiokafka's rejoin does):
        every position goes back to the group's committed offset (eager rebalancing)."""
        if self._pending is None:
            return
        self._generation, self._assignment = self._pending
        self._pending = None
        self._positions = {}

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        if self._subscription and not self._manual:
            raise IllegalStateError("subscribed to topics: cannot assign partitions as well")
        self._manual = True
        self._assignment = sorted(partitions)
        for tp in self._assignment:
            self._kafka._log(tp)  # it exists
        self._positions = {tp: o for tp, o in self._positions.items() if tp in self._assignment}

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    # -- positions --

    def _owned(self, tp: TopicPartition) -> None:
        if tp not in self._assignment:
            raise IllegalStateError(f"No current assignment for partition {tp}")

    def _position(self, tp: TopicPartition) -> int:
        known = self._positions.get(tp)
        if known is not None:
            return known
        committed = self._committed(tp)
        if committed is not None:
            start = committed
        elif self._reset == "earliest":
            start = 0
        elif self._reset == "latest":
            start = self._kafka.end_offset(tp)
        else:
            raise NoOffsetForPartitionError(tp)
        self._positions[tp] = start
        return start

    def _committed(self, tp: TopicPartition) -> int | None:
        if self.group_id is None:
            return None
        return self._kafka.committed(self.group_id, tp)

    async def position(self, tp: TopicPartition) -> int:
        self._alive()
        self._owned(tp)
        return self._position(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._owned(tp)
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        self._positions[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._assignment):
            self.seek(tp, 0)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._assignment):
            self.seek(tp, self._kafka.end_offset(tp))

    async def committed(self, tp: TopicPartition) -> int | None:
        self._alive()
        if self.group_id is None:
            raise IllegalOperation("Requires group_id")
        return self._committed(tp)

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets`` (default: every assigned partition's position) for the group:
        ``CommitFailedError`` if the group rebalanced since this member's last poll, or a
        partition is not this member's."""
        self._alive()
        if self.group_id is None:
            raise IllegalOperation("Requires group_id")
        if offsets is None:
            offsets = {tp: self._position(tp) for tp in self._assignment}
        if self._manual:
            g = self._kafka._groups.setdefault(self.group_id, _Group(self.group_id))
        else:
            self._kafka._check_commit(self.group_id, self, self._generation, offsets)
            g = self._kafka._groups[self.group_id]
        for tp, offset in offsets.items():
            offset = getattr(offset, "offset", offset)  # an OffsetAndMetadata too
            g.committed[tp] = int(offset)

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[Any, int]:
        self._alive()
        return {tp: 0 for tp in partitions if self._kafka._log(tp) is not None}

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[Any, int]:
        self._alive()
        return {tp: self._kafka.end_offset(tp) for tp in partitions}

    # -- fetching --

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout_ms: int = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Records from the assigned partitions (or ``partitions``), up to ``max_records``
        in all and ``max_partition_fetch_bytes`` per partition (at least one record each),
        waiting up to ``timeout_ms`` for any. A record whose header name is not UTF-8 makes
        the fetch raise ``UnicodeDecodeError``, with the partition's position before it."""
        self._alive()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        limit = max_records if max_records is not None else self._max_poll
        while True:
            self._sync()
            got = self._fetch(partitions, limit)
            if got or loop.time() >= deadline:
                return got
            await self._kafka._changed(deadline - loop.time())
            self._alive()

    def _fetch(
        self, partitions: tuple[TopicPartition, ...], limit: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        wanted = [tp for tp in self._assignment if not partitions or tp in partitions]
        if not wanted:
            return {}
        first = next(self._fair) % len(wanted)  # each partition first in turn
        wanted = wanted[first:] + wanted[:first]
        out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        moved: dict[TopicPartition, int] = {}
        left = limit if limit is not None else float("inf")
        for tp in wanted:
            if left <= 0:
                break
            if tp.topic not in self._kafka._topics:
                continue
            log = self._kafka._log(tp)
            at = self._position(tp)
            taken: list[ConsumerRecord[bytes, bytes]] = []
            size = 0
            while at < len(log) and left > 0:
                stored = log[at]
                record_size = _BATCH_HEADER + len(stored.key or b"") + len(stored.value or b"")
                record_size += sum(len(n) + len(v or b"") for n, v in stored.headers)
                if taken and size + record_size > self._partition_bytes:
                    break
                taken.append(_consumer_record(tp, stored))  # may raise: nothing moves
                size += record_size
                at += 1
                left -= 1
            if taken:
                out[tp] = taken
                moved[tp] = at
        self._positions.update(moved)
        return out


class MemoryProducer:
    """The face of ``AIOKafkaProducer`` the bus uses, on a ``MemoryKafka``."""

    def __init__(self, kafka: MemoryKafka, **config: Any) -> None:
        _refuse_unknown("producer", config, _PRODUCER_OPTIONS)
        if config.get("transactional_id") is not None:
            raise NotModelled("Kafka transactions (transactional_id) are not modelled")
        if config.get("acks", 1) not in ("all", -1, 1):
            raise NotModelled(f"acks={config['acks']!r} is not modelled")
        self._kafka = kafka
        self.client_id = config.get("client_id")
        self._max_request_size = int(config.get("max_request_size", _AIOKAFKA_MAX_REQUEST_SIZE))
        self._started = False
        self._closed = False
        self.sent = 0

    async def start(self) -> None:
        if self._closed:
            raise IllegalStateError("a stopped producer cannot start again")
        self._started = True

    async def stop(self) -> None:
        self._closed = True

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """As aiokafka's: the record's own faults (too large for ``max_request_size``, an
        unknown topic) are raised here; the broker's answer (its offset, or the topic's
        ``max.message.bytes`` refusing it) is the future's."""
        if self._closed or not self._started:
            raise ProducerClosed()
        assert not (value is None and key is None), "Need at least one: key or value"
        hs = list(headers or [])
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, hs)
        if size > self._max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                "maximum request size you have configured with the max_request_size "
                "configuration"
            )
        self._kafka._topic(topic)  # aiokafka waits for the metadata, then refuses likewise
        answer: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        try:
            answer.set_result(
                self._kafka.append(
                    topic, value, key, hs, partition=partition, timestamp_ms=timestamp_ms
                )
            )
            self.sent += 1
        except MessageSizeTooLargeError as exc:
            answer.set_exception(exc)
        return answer

    async def send_and_wait(self, topic: str, *args: Any, **kwargs: Any) -> RecordMetadata:
        return await (await self.send(topic, *args, **kwargs))

    async def begin_transaction(self) -> None:
        raise NotModelled("Kafka transactions are not modelled")

    async def send_offsets_to_transaction(self, *args: Any) -> None:
        raise NotModelled("Kafka transactions are not modelled")


class MemoryTransport:
    """A ``Transport`` whose clients are a ``MemoryKafka``'s (logins are not checked)."""

    def __init__(self, kafka: MemoryKafka | None = None) -> None:
        self.kafka = kafka or MemoryKafka()
        self.consumers: list[MemoryConsumer] = []
        self.producers: list[MemoryProducer] = []

    def consumer(self, settings: Settings, *topics_: str, **config: Any) -> MemoryConsumer:
        consumer = MemoryConsumer(self.kafka, *topics_, **config)
        self.consumers.append(consumer)
        return consumer

    def producer(self, settings: Settings, **config: Any) -> MemoryProducer:
        producer = MemoryProducer(self.kafka, **config)
        self.producers.append(producer)
        return producer
