"""Reading the contract's topics with aiokafka without being stopped by any record, and the
dead letters every reader writes. The one module of the contract that imports aiokafka (``import
events`` stays light; ``events.SafeFetcher`` and the rest load this module when first used).

A record aiokafka itself cannot decode (a header *name* that is not UTF-8: it decodes names
strictly; a corrupt batch) makes ``AIOKafkaConsumer.getmany`` raise, on every fetch of that
partition, and the failed fetch drops what it had already taken of the other partitions from
the client's buffer. ``SafeFetcher`` wraps the consumer: a fetch that fails so is recovered by
moving every assigned partition back to the first record not yet handed over, and reading each
one record at a time, so that the record at fault is found by its position. It hands over,
per partition, the readable records (as ``KafkaRecord``) and the unreadable positions (topic,
partition, offset, the error, whatever bytes the error holds), in offset order; the caller
deals with both (``dead_letter(u.record, error=u.error, ...)`` for the latter), then commits
``next_offset``. Nothing of another partition is lost or handed over twice.

The fetcher moves the consumer's positions (``seek``) only during such a recovery; a caller
that seeks on its own says so with ``SafeFetcher.seek``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException, IllegalOperation, KafkaError

from events import topics
from events._envelope import KafkaRecord

__all__ = [
    "DLQ_HEADER_PREFIX",
    "MAX_ERROR_CHARS",
    "PartitionBatch",
    "SafeFetcher",
    "Unreadable",
    "dead_letter",
    "fetch_safely",
    "reason_of",
    "unreadable_fetch",
]

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = topics.DLQ_HEADER_PREFIX
MAX_ERROR_CHARS = 4000  # a reason is a few lines; a handler's exception text can be anything

# What the client raises while decoding fetched records it cannot read (aiokafka decodes
# header names as UTF-8, strictly; a batch may be corrupt). Anything else from a fetch (the
# broker away, the consumer stopped) is not the records' fault and is raised as it is.
_UNREADABLE_FETCH: tuple[type[BaseException], ...] = (
    ValueError,  # UnicodeDecodeError among them
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    struct.error,
    CorruptRecordException,
)
EMPTY_POLLS = 10  # while stepping through a partition: polls that find nothing before giving up
STEP_LIMIT = 500  # records stepped through per partition in one recovery, if the caller sets none


def unreadable_fetch(exc: BaseException) -> bool:
    """True if ``exc``, raised by a fetch, is about the records fetched."""
    if isinstance(exc, CorruptRecordException):
        return True
    return isinstance(exc, _UNREADABLE_FETCH) and not isinstance(exc, KafkaError)


# --- what a fetch hands over -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A position whose record the Kafka client could not decode. ``raw``: whatever bytes the
    error holds (a UnicodeDecodeError's: the header name); the record's key, value and
    headers are beyond reach, the client gives nothing of it."""

    topic: str
    partition: int
    offset: int
    error: str  # the reason, for a person and a dead letter
    exception: str  # the client's exception, ``Type: text``
    raw: bytes | None = None

    @property
    def record(self) -> KafkaRecord:
        """What there is of the record, for ``dead_letter``: its position, ``raw`` as value."""
        return KafkaRecord(
            topic=self.topic, key=None, value=self.raw, partition=self.partition, offset=self.offset
        )

    @property
    def fingerprint(self) -> str:
        """16 hex digits of a sha256 of what is known of it (to tell it from another record at
        a reused offset)."""
        return hashlib.sha256(self.raw or self.exception.encode()).hexdigest()[:16]

    @classmethod
    def of(cls, tp: TopicPartition, offset: int, exc: BaseException) -> Unreadable:
        fragment = getattr(exc, "object", None)
        raw = bytes(fragment) if isinstance(fragment, bytes | bytearray | memoryview) else None
        where = f"{tp.topic}[{tp.partition}]@{offset}"
        if isinstance(exc, UnicodeDecodeError):
            error = (
                f"the Kafka client could not decode the record at {where} (or the first one "
                f"after it): a header name is not UTF-8 text ({exc}; the name's bytes are this "
                "dead letter's value). Header names must be UTF-8 text; the record's key, value "
                "and headers could not be read"
            )
        else:
            error = (
                f"the Kafka client could not decode the record at {where} (or the first one "
                f"after it): {type(exc).__name__}: {exc}; the record's key, value and headers "
                "could not be read"
            )
        return cls(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            error=error,
            exception=f"{type(exc).__name__}: {exc}"[:300],
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """One partition's part of a fetch: its readable records and its unreadable positions,
    each in offset order; ``next_offset`` is what to commit once both are dealt with."""

    records: tuple[KafkaRecord, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()
    next_offset: int = 0
    # (offset, the record's timestamp in ms since the epoch) of each readable record
    timestamps: tuple[tuple[int, int], ...] = ()

    def timestamp(self, record: KafkaRecord) -> int | None:
        """``record``'s Kafka timestamp (ms since the epoch), if the client gave one."""
        for offset, ms in self.timestamps:
            if offset == record.offset:
                return ms
        return None

    def items(self) -> list[KafkaRecord | Unreadable]:
        """Records and unreadable positions together, in offset order."""
        both: list[KafkaRecord | Unreadable] = [*self.records, *self.unreadable]
        return sorted(both, key=lambda item: item.offset)

    def __len__(self) -> int:
        return len(self.records) + len(self.unreadable)


@dataclass
class _Stepped:
    records: list[KafkaRecord] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    next_offset: int = 0
    timestamps: list[tuple[int, int]] = field(default_factory=list)

    def batch(self) -> PartitionBatch:
        return PartitionBatch(
            tuple(self.records), tuple(self.unreadable), self.next_offset, tuple(self.timestamps)
        )


def _timestamps(records: list[Any]) -> tuple[tuple[int, int], ...]:
    found = []
    for r in records:
        offset, ms = getattr(r, "offset", None), getattr(r, "timestamp", None)
        if isinstance(offset, int) and isinstance(ms, int):
            found.append((offset, ms))
    return tuple(found)


class SafeFetcher:
    """``getmany`` of an ``AIOKafkaConsumer`` (subscribed or assigned, with or without a
    group) that no record can stop. Keep one per consumer, and fetch only through it."""

    def __init__(
        self,
        consumer: Any,
        *,
        step_timeout_ms: int = 200,
        empty_polls: int = EMPTY_POLLS,
        name: str = "",
    ) -> None:
        self.consumer = consumer
        self._step_timeout_ms = step_timeout_ms
        self._empty_polls = empty_polls
        self._name = name or "consumer"
        # per partition, the offset after the last record handed over (or, before any, where
        # the consumer stood): where a recovery takes the partition up again
        self._next: dict[TopicPartition, int] = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Move ``tp`` to ``offset`` (the consumer and this fetcher's idea of it)."""
        self.consumer.seek(tp, offset)
        self._next[tp] = offset

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, PartitionBatch]:
        """As ``AIOKafkaConsumer.getmany``, per partition a ``PartitionBatch``. Raises what the
        consumer raises that is not about the records (the consumer stopped, …)."""
        await self._know_positions(timeout_ms)
        try:
            got = await self.consumer.getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
        except Exception as exc:
            if not unreadable_fetch(exc):
                raise
            return await self._recover(exc, partitions, max_records)
        out: dict[TopicPartition, PartitionBatch] = {}
        for tp, records in got.items():
            if not records:
                continue
            converted = tuple(KafkaRecord.from_consumer_record(r) for r in records)
            next_offset = int(records[-1].offset) + 1
            self._next[tp] = next_offset
            out[tp] = PartitionBatch(converted, (), next_offset, _timestamps(records))
        return out

    async def _know_positions(self, timeout_ms: int) -> None:
        """Remember where each newly assigned partition stands before it is fetched from (and
        forget partitions no longer assigned: a new owner may have moved them on)."""
        assigned = set(self.consumer.assignment())
        for tp in [tp for tp in self._next if tp not in assigned]:
            del self._next[tp]
        new = sorted(assigned - set(self._next))
        if not new:
            return
        # no wait beyond the fetch's own: a position not known yet is asked for next time
        asked = {tp: asyncio.ensure_future(self.consumer.position(tp)) for tp in new}
        _, pending = await asyncio.wait(asked.values(), timeout=max(timeout_ms, 10) / 1000)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for tp, task in asked.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                self._next[tp] = int(task.result())

    async def _start_of(self, tp: TopicPartition) -> int:
        """The first record of ``tp`` not yet handed over (by this fetcher, or as committed by
        the group before it)."""
        known = self._next.get(tp)
        committed: int | None = None
        try:
            got = await self.consumer.committed(tp)
            committed = None if got is None else int(got)
        except IllegalOperation:  # no group: nothing is committed
            pass
        candidates = [x for x in (known, committed) if x is not None]
        if candidates:
            return max(candidates)
        return int(await self.consumer.position(tp))  # where the consumer stands: best known

    async def _recover(
        self,
        exc: BaseException,
        partitions: tuple[TopicPartition, ...],
        max_records: int | None,
    ) -> dict[TopicPartition, PartitionBatch]:
        log.warning(
            "%s: the Kafka client could not decode fetched records (%s: %s); reading "
            "partition by partition to find the record at fault",
            self._name, type(exc).__name__, exc,
        )  # fmt: skip
        out: dict[TopicPartition, PartitionBatch] = {}
        try:
            assigned = sorted(self.consumer.assignment())
            if partitions:
                assigned = [tp for tp in assigned if tp in set(partitions)]
            if not assigned:
                return out
            starts = {tp: await self._start_of(tp) for tp in assigned}
            ends = await self.consumer.end_offsets(assigned)
            for tp in assigned:
                self.seek(tp, starts[tp])
            limit = max_records or STEP_LIMIT
            for tp in assigned:
                if starts[tp] >= int(ends.get(tp, 0)):
                    continue
                stepped = await self._step_through(tp, starts[tp], int(ends[tp]), limit)
                if len(stepped.records) + len(stepped.unreadable):
                    out[tp] = stepped.batch()
                if max_records is not None:
                    limit -= len(out[tp]) if tp in out else 0
                    if limit <= 0:
                        break
        except KafkaError as kafka_exc:
            # The broker away, or a rebalance took a partition: what was stepped through is
            # handed over; every other partition is back at its start for the next fetch.
            log.warning("%s: recovery interrupted (%r); fetching again", self._name, kafka_exc)
        return out

    async def _step_through(self, tp: TopicPartition, start: int, end: int, limit: int) -> _Stepped:
        """Read ``tp`` from ``start`` one record at a time, up to ``end`` (its end when the
        recovery began) or ``limit`` items; a record the client cannot decode is noted and
        passed by offset."""
        stepped = _Stepped(next_offset=start)
        empty = 0
        while len(stepped.records) + len(stepped.unreadable) < limit and empty < self._empty_polls:
            try:
                got = await self.consumer.getmany(
                    tp, timeout_ms=self._step_timeout_ms, max_records=1
                )
            except Exception as exc:
                if not unreadable_fetch(exc):
                    raise
                bad = int(await self.consumer.position(tp))  # it stops before what it cannot read
                unreadable = Unreadable.of(tp, bad, exc)
                log.error("%s: %s", self._name, unreadable.error)
                stepped.unreadable.append(unreadable)
                stepped.next_offset = bad + 1
                self.seek(tp, bad + 1)
                empty = 0
            else:
                records = got.get(tp, [])
                if records:
                    empty = 0
                    stepped.records.extend(KafkaRecord.from_consumer_record(r) for r in records)
                    stepped.timestamps.extend(_timestamps(records))
                    stepped.next_offset = int(records[-1].offset) + 1
                    self._next[tp] = stepped.next_offset
                else:
                    empty += 1
            if int(await self.consumer.position(tp)) >= end:
                break
        return stepped


_FETCHERS: weakref.WeakKeyDictionary[Any, SafeFetcher] = weakref.WeakKeyDictionary()


async def fetch_safely(
    consumer: Any,
    *partitions: TopicPartition,
    timeout_ms: int = 0,
    max_records: int | None = None,
) -> dict[TopicPartition, PartitionBatch]:
    """``SafeFetcher(consumer).getmany(...)``, with one fetcher kept per consumer."""
    fetcher = _FETCHERS.get(consumer)
    if fetcher is None:
        fetcher = _FETCHERS[consumer] = SafeFetcher(consumer)
    return await fetcher.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


# --- dead letters ----------------------------------------------------------------------------


def dead_letter(
    record: KafkaRecord,
    *,
    dlq_topic: str,
    error: str,
    stage: str,
    group: str,
    attempts: int = 1,
) -> KafkaRecord:
    """``record`` as it was (same key, value and headers) for ``dlq_topic``, plus
    ``lockstep.dlq.*`` headers that say why and where from. ``stage``: ``decode`` (not a valid
    event, or not even a record the client could read: ``Unreadable.record``), ``handle`` (its
    handler failed), ``store`` (Postgres refused it), ``duplicate`` (an event id already
    handled, with other content) or ``signature`` (a decision whose signature does not hold:
    ``events.signing``). Never raises, whatever the record holds; a dead letter of a
    dead letter does not pile up the headers."""
    if len(error) > MAX_ERROR_CHARS:
        error = f"{error[:MAX_ERROR_CHARS]}… ({len(error)} characters)"
    why = {
        "error": error,
        "stage": stage,
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "group": group,
        "attempts": str(attempts),
        "failed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    kept = tuple(  # header names may become Postgres text (an outbox): no NUL, no surrogate
        (_storable(name), value)
        for name, value in record.headers
        if not name.startswith(DLQ_HEADER_PREFIX)
    )
    extra = tuple((DLQ_HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in why.items())
    return KafkaRecord(topic=dlq_topic, key=record.key, value=record.value, headers=kept + extra)


def reason_of(record: KafkaRecord) -> dict[str, str]:
    """The ``lockstep.dlq.*`` headers of a dead letter, without the prefix."""
    return {
        k[len(DLQ_HEADER_PREFIX) :]: (v or b"").decode("utf-8", errors="replace")
        for k, v in record.headers
        if k.startswith(DLQ_HEADER_PREFIX)
    }


def _storable(name: str) -> str:
    return name.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
