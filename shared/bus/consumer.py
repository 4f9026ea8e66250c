"""The consuming half of the bus: read a poll, handle it in one Postgres transaction, commit.

A poll's records (every partition's) are handled in one transaction, on a connection the
consumer keeps: the inbox rows of them all in one statement, every lock the handlers declared
in one more (``Router.handles(..., locks=, shared=)``, in sorted order), then each handler on
its run of events (a batch handler once for all of them), then the outbox rows of all they
emitted in one statement. No savepoint on this path. Once it has committed, what it emitted
is handed straight to the process's relay (``OutboxRelay.hand``), and the offsets are
committed to Kafka. If the batch fails for a reason of its own (a handler raising, Postgres
refusing a row), it is undone and each record is handled alone: each try of its handler in a
savepoint, retried, and after ``handler_max_attempts`` dead-lettered in the same transaction
(the failed try in the batch counts as one); the rest of the batch goes through. If Postgres
is unreachable, or the transaction loses a deadlock, the batch is retried until it goes
through: nothing is skipped and nothing is lost.

No record stops a partition. One that cannot be read as an event is dead-lettered (stage
``decode``); one the Kafka client itself cannot decode (a header name that is not UTF-8)
makes the fetch fail, and is found by the contract's ``events.kafka.SafeFetcher`` (reading
its partition one record at a time, nothing of the other partitions lost), then dead-lettered
and passed by offset, the dead letter committed before the offset. An event
whose id was handled before with other content is dead-lettered too (stage ``duplicate``); an
identical redelivery is skipped.

A decision (a type in ``events.signing.SIGNERS``) is verified before its handler runs
(``shared.bus.signing.Verifier``). One whose signature does not hold is dead-lettered at once
(stage ``signature``, ``signature <reason>: <detail>``; no handler, no retries), reported by a
``signature.refused`` event on the ``security`` topic, and known in the inbox by its position
(as an unreadable record is), so a forged event cannot take the id of a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from events import CDEvent, InvalidEvent, KafkaRecord, decode, encode, model_for, short_type
from events.kafka import PartitionBatch, SafeFetcher, Unreadable, unreadable_fetch
from events.security import SignatureRefusal
from events.signing import SignatureRefused
from shared.bus import inbox
from shared.bus.dlq import dead_letter
from shared.bus.handlers import HandlerContext, Item, Registration, Router, take_locks
from shared.bus.outbox import OutboxRelay, channel_for, notify, write
from shared.bus.producer import kafka_is_transient, quiet_bootstrap
from shared.bus.signing import KeySource, Verifier
from shared.bus.transport import KAFKA, Transport
from shared.clock import Clock, system_clock
from shared.db import is_transient, until_up
from shared.settings import Settings
from shared.telemetry import context_from_headers

log = logging.getLogger(__name__)

HANDLED, DEAD = "handled", "dead-lettered"


class Stopping(Exception):
    """Shutdown was asked for while a batch could not be committed; it will be redelivered."""


@dataclass(frozen=True)
class Refused:
    """A decision read whole whose signature does not hold: not to be handled."""

    event: CDEvent
    refused: SignatureRefused

    @property
    def reason(self) -> str:
        return f"signature {self.refused.reason}: {self.refused.detail}"


class EventConsumer:
    def __init__(
        self,
        *,
        service: str,
        router: Router,
        pool: asyncpg.Pool,
        settings: Settings,
        tracer: Tracer,
        schema: str,
        clock: Clock = system_clock,
        signing_key: KeySource | None = None,
        verifier: Verifier | None = None,
        transport: Transport = KAFKA,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._signing_key = signing_key
        self._verifier = verifier or Verifier(settings)
        self.service = service
        self._router = router
        self._pool = pool
        self._settings = settings
        self._tracer = tracer
        self._channel = channel_for(schema)
        self._group = settings.group_id(service)
        self._dlq_topic = settings.topic("dlq")
        self._topics = sorted(settings.topic(t) for t in router.topics)
        self.assigned = asyncio.Event()  # set once the group has given us partitions
        # The relay of this process, if it runs: what a batch emitted is handed to it once
        # committed (else the outbox's NOTIFY wakes whichever relay there is).
        self.handoff: OutboxRelay | None = None
        self._conn: asyncpg.Connection | None = None
        # events whose handler failed in a batch that was undone: that try counts
        self._tried: set[tuple[str, str]] = set()
        self.handled = 0  # events handled (first deliveries, committed) by this consumer
        self._fresh = 0  # of the transaction under way

    async def _started(self) -> AIOKafkaConsumer:
        """A consumer of the service's topics, started; closed again if it fails to start (or
        the start is cancelled), so that a try leaves nothing behind."""
        consumer = self._transport.consumer(
            self._settings,
            *self._topics,
            group_id=self._group,
            client_id=f"{self._group}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1024 * 1024, self._settings.max_event_bytes * 2),
            fetch_max_wait_ms=100,
            **self._membership(),
        )
        try:
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(consumer.stop())
            raise
        return consumer

    def _membership(self) -> dict[str, Any]:
        """Static membership (``Settings.consumer_instance``), else the group's dynamic one.

        The assignor stays aiokafka's round-robin: its sticky one keeps its state in the class
        (shared by every consumer of a process, which ``lockstep run all --together`` has) and
        never learns its generation (aio-libs/aiokafka#1175, #1176)."""
        if self._settings.consumer_instance is None:
            return {}
        return {"group_instance_id": f"{self._group}.{self._settings.consumer_instance}"}

    async def run(self, stop: asyncio.Event) -> None:
        # Kafka away at start-up is waited for (until ``stop``), not a reason to end.
        with quiet_bootstrap():
            consumer = await until_up(
                self._started,
                stop=stop,
                who=self.service,
                what=f"Kafka at {self._settings.kafka_bootstrap}",
                transient=kafka_is_transient,
                logger=log,
            )
        if consumer is None:
            return  # told to stop before Kafka answered: nothing was read
        fetcher = SafeFetcher(consumer, name=self._group)
        owned: set[TopicPartition] = set()
        try:
            while not stop.is_set():
                batches = await fetcher.getmany(
                    timeout_ms=200, max_records=self._settings.consumer_batch
                )
                assignment = set(consumer.assignment())
                if assignment:
                    self.assigned.set()
                if assignment - owned and self.handoff is not None:
                    # Partitions new to this instance: what their last owner committed and did
                    # not publish leaves before anything this instance emits about them.
                    await self.handoff.catch_up(stop)
                owned = assignment
                if not batches:
                    continue
                if any(batch.unreadable for batch in batches.values()):
                    for tp, batch in batches.items():  # a recovered fetch: step by step
                        await self._handle_stepped(consumer, tp, batch, stop)
                    continue
                records = [r for batch in batches.values() for r in batch.records]
                await self._handle_batch(records, stop)
                await self._commit(consumer, {tp: b.next_offset for tp, b in batches.items()})
        except Stopping:
            return  # what was not committed will be redelivered, and deduplicated
        finally:
            await self._release_conn()
            await consumer.stop()

    async def _handle_stepped(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        batch: PartitionBatch,
        stop: asyncio.Event,
    ) -> None:
        """One partition of a fetch the client failed to decode (``SafeFetcher`` found the
        records at fault by reading one record at a time): the records before each unreadable
        position are handled as usual; it is dead-lettered, and its offset committed, only once
        the dead letter is in the outbox."""
        good: list[KafkaRecord] = []
        for item in batch.items():
            if isinstance(item, KafkaRecord):
                good.append(item)
                continue
            await self._handle_batch(good, stop)
            good = []
            await self._dead_letter_unreadable(item, stop)
            await self._commit(consumer, {tp: item.offset + 1})
        await self._handle_batch(good, stop)
        await self._commit(consumer, {tp: batch.next_offset})

    async def _dead_letter_unreadable(self, unreadable: Unreadable, stop: asyncio.Event) -> None:
        """A dead letter for a record the client could not decode: its position and the error,
        and as its value whatever bytes the error holds (a UnicodeDecodeError's: the header
        name). Its key and value are beyond reach: the client gives nothing of the record."""
        u = unreadable
        source, event_id = (
            f"kafka:{u.topic}/{u.partition}",
            f"{u.offset}:unreadable:{u.fingerprint}",
        )
        log.error(
            "%s: %s[%d]@%d -> dead letter: %s", self._group, u.topic, u.partition, u.offset, u.error
        )
        backoff = 0.1
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    if await inbox.claim(conn, source, event_id, None, DEAD):
                        await write(conn, [self._dead(u.record, u.error, "decode", 1)])
                        await notify(conn, self._channel)
                return
            except Exception as db_exc:
                if not is_transient(db_exc):
                    raise
                if stop.is_set():
                    raise Stopping from db_exc
                log.warning(
                    "%s: %s; retrying the dead letter in %.1fs", self._group, db_exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance moved the partition; the new owner re-reads and the inbox skips.
            log.info("%s: offsets not committed after a rebalance (%s)", self._group, exc)
        except KafkaError as exc:
            # The broker is away; a later commit covers these offsets (commits are cumulative).
            log.warning("%s: commit failed (%s); the next commit covers it", self._group, exc)

    def _readable(self, records: Sequence[KafkaRecord]) -> list[tuple[KafkaRecord, Any]]:
        """The records this service must deal with: each decoded, or the reason it cannot be.
        Types that are known but handled elsewhere (e.g. this service's own output) are left
        alone without decoding."""
        work: list[tuple[KafkaRecord, Any]] = []
        for record in records:
            model = model_for(record.header("ce_type") or "")
            if model is not None and not self._router.handles_type(model):
                continue
            try:
                decoded = decode(record, max_bytes=self._settings.max_event_bytes)
            except InvalidEvent as exc:
                work.append((record, exc))
                continue
            refused = self._verifier.refusal(record, decoded.event)
            work.append((record, decoded if refused is None else Refused(decoded.event, refused)))
        return work

    async def _handle_batch(self, records: Sequence[KafkaRecord], stop: asyncio.Event) -> None:
        work = self._readable(records)
        if work:
            await self._handle_work(work, stop)

    async def _connection(self) -> asyncpg.Connection:
        """The consumer's own connection, kept from one batch to the next (no reset round
        trip per batch; its prepared statements stay)."""
        if self._conn is None or self._conn.is_closed():
            await self._release_conn()
            self._conn = await self._pool.acquire()
        return self._conn

    async def _release_conn(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def _handle_work(
        self, work: list[tuple[KafkaRecord, Any]], stop: asyncio.Event, *, alone: bool = False
    ) -> None:
        """Handle ``work`` in one transaction: its inbox rows, every handler's writes, and the
        outbox rows of what they emitted, handed to the relay once committed. A failure that is
        not the records' fault (Postgres away, a deadlock) retries the whole batch; any other
        undoes it, and each record is then handled ``alone``: a failing handler is retried,
        then dead-lettered, by itself."""
        backoff = 0.1
        while True:
            stamps = self.handoff.take_stamps() if self.handoff is not None else []
            try:
                conn = await self._connection()
                async with conn.transaction():
                    emitted = await self._apply(conn, work, alone=alone)
                    ids = await write(
                        conn,
                        emitted,
                        lease_s=self.handoff.lease_s if self.handoff is not None else None,
                        sent=stamps,
                    )
                    if emitted and self.handoff is None:
                        await notify(conn, self._channel)
                self.handled += self._fresh
                if self.handoff is not None:
                    self.handoff.hand(ids, emitted)
                return
            except Exception as exc:
                if stamps and self.handoff is not None:
                    self.handoff.give_back(stamps)
                if is_transient(exc):
                    await self._release_conn()  # it may be the connection that died
                    if stop.is_set():
                        raise Stopping from exc
                    log.warning("%s: %s; retrying the batch in %.1fs", self._group, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if len(work) > 1 or not alone:
                    log.warning(
                        "%s: a batch of %d failed (%s: %s); handling its records one by one",
                        self._group, len(work), type(exc).__name__, exc,
                    )  # fmt: skip
                    try:
                        for one in work:
                            await self._handle_work([one], stop, alone=True)
                    finally:
                        self._tried.clear()
                    return
                if not isinstance(exc, asyncpg.PostgresError):
                    raise
                # Postgres refused something outside any handler (the inbox or outbox row of
                # a record it cannot store): the record at fault, alone.
                await self._dead_letter_alone(work[0][0], exc)
                return

    async def _dead_letter_alone(self, record: KafkaRecord, exc: Exception) -> None:
        error = f"Postgres refused to store it: {type(exc).__name__}: {exc}"
        log.error(
            "%s: %s[%d]@%d -> dead letter: %s",
            self._group, record.topic, record.partition, record.offset, error,
        )  # fmt: skip
        source, event_id, event_type, _, digest = _inbox_key(record, InvalidEvent(error))
        async with self._pool.acquire() as conn, conn.transaction():
            if await inbox.claim(conn, source, event_id, event_type, DEAD, digest):
                await write(conn, [self._dead(record, error, "store", 1)])
                await notify(conn, self._channel)

    async def _apply(
        self, conn: asyncpg.Connection, work: list[tuple[KafkaRecord, Any]], *, alone: bool
    ) -> list[KafkaRecord]:
        """Handle a batch inside ``conn``'s transaction; returns the records to publish."""
        keys = [_inbox_key(record, item) for record, item in work]
        fresh = await inbox.claim_many(conn, keys)
        firsts: list[bool] = []
        for key in keys:
            firsts.append((key[0], key[1]) in fresh)
            fresh.discard((key[0], key[1]))  # a second copy in this batch is a duplicate
        # what the inbox holds for events seen before (or earlier in this batch)
        repeats = [(k[0], k[1]) for k, first in zip(keys, firsts, strict=True) if not first]
        stored = await inbox.digests_of(conn, repeats) if repeats else {}
        emitted: list[KafkaRecord] = []
        todo: list[_Todo] = []
        for (record, item), key, first_time in zip(work, keys, firsts, strict=True):
            if isinstance(item, InvalidEvent | Refused):  # refused for good: at once, once
                if first_time:
                    log.warning(
                        "%s: %s[%d]@%d -> dead letter: %s",
                        self._group, record.topic, record.partition, record.offset, item.reason,
                    )  # fmt: skip
                    stage = "decode" if isinstance(item, InvalidEvent) else "signature"
                    emitted.append(self._dead(record, item.reason, stage, 1))
                    if isinstance(item, Refused):
                        emitted.append(self._refusal_report(record, item))
                continue
            if not first_time:
                known, outcome = stored.get((key[0], key[1]), (None, ""))
                if known is not None and known != key[4]:
                    emitted.extend(
                        await self._conflict(conn, record, item.event, key, known, outcome)
                    )
                    continue
            registration = self._router.registration_for(item.event)
            assert registration is not None
            todo.append(_Todo(record, item.event, item.trace_headers, first_time, registration))
        firsts_todo = [(t.registration, t.event) for t in todo if t.first_time]
        self._fresh = len(firsts_todo)
        await take_locks(conn, firsts_todo)
        memo: dict[str, Any] = {}  # shared by the batch's handlers (the model in force)
        for run in _runs(todo):
            emitted.extend(await self._run(conn, run, memo, alone=alone))
        return emitted

    async def _run(
        self, conn: asyncpg.Connection, run: list[_Todo], memo: dict[str, Any], *, alone: bool
    ) -> list[KafkaRecord]:
        """One handler's share of a batch (events in their partitions' order): each event in a
        span of its own, the handler called per event or once for them all."""
        registration = run[0].registration
        emitted: list[KafkaRecord] = []
        failing: _Todo | None = None
        spans = [self._span(t) for t in run]
        try:
            contexts = [
                self._context(conn, t, span, memo) for t, span in zip(run, spans, strict=True)
            ]
            handled = [(t, c) for t, c in zip(run, contexts, strict=True) if t.first_time]
            for t, span in zip(run, spans, strict=True):
                if not t.first_time:
                    span.set_attribute("lockstep.duplicate", True)
            if registration.batch:
                items = [Item(t.event, c) for t, c in handled]
                if alone and items:
                    event = handled[0][0].event

                    async def call_alone(c: HandlerContext) -> None:
                        await registration.fn([Item(event, c)])

                    emitted += await self._tries(conn, handled[0], call_alone)
                elif items:
                    await registration.fn(items)
                    for _, c in handled:
                        emitted += c.emitted
                return emitted
            for t, c in handled:
                failing = t
                with trace.use_span(c.span, end_on_exit=False):
                    if alone:

                        async def call(c2: HandlerContext, e: CDEvent = t.event) -> None:
                            await registration.fn(e, c2)

                        emitted += await self._tries(conn, (t, c), call)
                    else:
                        await registration.fn(t.event, c)
                        emitted += c.emitted
            return emitted
        except Exception as exc:
            for span in spans:
                if span.is_recording():
                    span.set_attribute("lockstep.batch_undone", True)
            if not alone and not is_transient(exc):
                # the try counts: each event it may be the fault of has one try fewer left
                at_fault = run if registration.batch or failing is None else [failing]
                self._tried.update((t.event.source, t.event.id) for t in at_fault)
            raise
        finally:
            for span in spans:
                span.end()

    def _span(self, t: _Todo) -> Span:
        return self._tracer.start_span(
            f"process {short_type(t.event.context.type)}",
            context=context_from_headers(t.trace_headers),
            kind=SpanKind.CONSUMER,
            attributes=_span_attributes(t.event, t.record),
        )

    def _context(
        self, conn: asyncpg.Connection, t: _Todo, span: Span, memo: dict[str, Any]
    ) -> HandlerContext:
        return HandlerContext(
            conn=conn,
            settings=self._settings,
            record=t.record,
            span=span,
            clock=self._clock,
            tracer=self._tracer,
            signing_key=self._signing_key,
            memo=memo,
        )

    async def _tries(
        self,
        conn: asyncpg.Connection,
        handled: tuple[_Todo, HandlerContext],
        call: Callable[[HandlerContext], Awaitable[None]],
    ) -> list[KafkaRecord]:
        """An event handled alone: each try in a savepoint, so a failure undoes that try only;
        after ``handler_max_attempts`` it is dead-lettered in the same transaction."""
        t, first = handled
        span, event = first.span, t.event
        attempts = self._settings.handler_max_attempts
        error = ""
        tried = 1 if (event.source, event.id) in self._tried else 0  # in its undone batch
        for attempt in range(1 + tried, attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self._settings.retry_backoff_s * 2 ** (attempt - 2))
            ctx = self._context(conn, t, span, first.memo)
            try:
                async with conn.transaction():  # a savepoint: a failure undoes this try only
                    await call(ctx)
                return ctx.emitted
            except Exception as exc:
                if is_transient(exc):
                    raise  # not the record's fault: the whole batch is retried
                first.memo.clear()  # what the undone try read may be undone too
                if attempt < attempts:
                    log.warning(
                        "%s: handler for %s failed (%s), try %d of %d",
                        self._group, event.id, exc, attempt, attempts,
                    )  # fmt: skip
                    continue
                error = f"handler failed {attempts} times; last error {type(exc).__name__}: {exc}"
                span.set_status(Status(StatusCode.ERROR, error))
                span.record_exception(exc)
                log.error("%s: %s -> dead letter (%s)", self._group, event.id, error)
                await inbox.set_outcome(conn, event.source, event.id, DEAD)
        return [self._dead(t.record, error, "handle", attempts)]

    async def _conflict(
        self,
        conn: asyncpg.Connection,
        record: KafkaRecord,
        event: CDEvent,
        key: inbox.InboxKey,
        known: str,
        outcome: str,
    ) -> list[KafkaRecord]:
        """Another event under an id already dealt with: dead-lettered, once per record (it is
        known in the inbox by its position, as an unreadable record is)."""
        error = (
            f"conflicting duplicate: event id {event.id!r} from source {event.source!r} was "
            f"already {outcome or 'dealt with'} with other content ({known}); this record is "
            f"{key[4]}. An event id names one event: send a changed event under a new id"
        )
        source, event_id, event_type, _, digest = _inbox_key(record, InvalidEvent(error))
        if not await inbox.claim(conn, source, event_id, event_type, DEAD, digest):
            return []  # this very record was dead-lettered before: a redelivery
        log.warning(
            "%s: %s[%d]@%d -> dead letter: %s",
            self._group, record.topic, record.partition, record.offset, error,
        )  # fmt: skip
        return [self._dead(record, error, "duplicate", 1)]

    def _refusal_report(self, record: KafkaRecord, item: Refused) -> KafkaRecord:
        """The ``signature.refused`` event that says this service would not act on it."""
        report = SignatureRefusal.of(
            service=self.service, source=f"lockstep/{self.service}", record=record,
            event=item.event, refused=item.refused,
        )  # fmt: skip
        return encode(report, topic=self._settings.topic(report.TOPIC))

    def _dead(self, record: KafkaRecord, error: str, stage: str, attempts: int) -> KafkaRecord:
        return dead_letter(
            record,
            dlq_topic=self._dlq_topic,
            error=error,
            stage=stage,
            group=self._group,
            attempts=attempts,
        )


@dataclass(frozen=True)
class _Todo:
    """An event of a batch to hand to its handler (or, seen before, to skip)."""

    record: KafkaRecord
    event: CDEvent
    trace_headers: dict[str, str]
    first_time: bool
    registration: Registration


def _runs(todo: list[_Todo]) -> list[list[_Todo]]:
    """The batch cut into runs of one handler each, in an order that keeps each partition's:
    per partition, its consecutive events for one handler are a run; the first runs of every
    partition go first (those of one handler together), then the second runs, and so on."""
    per_partition: dict[tuple[str, int], list[list[_Todo]]] = {}
    for t in todo:
        runs = per_partition.setdefault((t.record.topic, t.record.partition), [])
        if runs and runs[-1][0].registration is t.registration:
            runs[-1].append(t)
        else:
            runs.append([t])
    out: list[list[_Todo]] = []
    for depth in range(max((len(r) for r in per_partition.values()), default=0)):
        together: dict[int, list[_Todo]] = {}
        for runs in per_partition.values():
            if depth < len(runs):
                together.setdefault(id(runs[depth][0].registration), []).extend(runs[depth])
        out.extend(together.values())
    return out


def _inbox_key(record: KafkaRecord, item: Any) -> inbox.InboxKey:
    """(source, id, type, outcome, digest). A record that could not be read is known by its
    position and a hash of its bytes, so a redelivery of the same bad record is not
    dead-lettered twice, and another record at a reused offset (a recreated topic) is not
    mistaken for it. An event is known by its source and id, and remembered with a digest of
    its content as Lockstep read it (so a producer's other serialisation of the same event is
    the same event)."""
    if isinstance(item, InvalidEvent | Refused):
        value_digest = hashlib.sha256(record.value or b"").hexdigest()
        ce_type = (record.header("ce_type") or "").replace("\x00", "")[:255] or None
        return (
            f"kafka:{record.topic}/{record.partition}",
            f"{record.offset}:{value_digest[:16]}",
            ce_type,
            DEAD,
            f"sha256:{value_digest}",
        )
    event: CDEvent = item.event
    return (event.source, event.id, event.context.type, HANDLED, content_digest(event))


def content_digest(event: CDEvent) -> str:
    """sha256 of the event as Lockstep read it (its canonical JSON)."""
    return "sha256:" + hashlib.sha256(event.to_json()).hexdigest()


# An aiokafka ConsumerRecord as a KafkaRecord, never raising (see the contract's
# KafkaRecord.from_consumer_record); kept under this name for the code that imports it, as is
# ``unreadable_fetch`` (the contract's, events.kafka).
record_from_kafka = KafkaRecord.from_consumer_record
__all__ = ["EventConsumer", "Stopping", "content_digest", "record_from_kafka", "unreadable_fetch"]


def _span_attributes(event: CDEvent, record: KafkaRecord) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.context.type,
        "cloudevents.event_source": event.source,
    }
    label = event.artifact_label()
    if label:
        attrs["lockstep.artifact"] = label
    return attrs
