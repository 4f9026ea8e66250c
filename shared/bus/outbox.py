"""The outbox: records written in a handler's transaction, published by the relay.

Two ways out, one table. **Handed over**: the consumer writes what a batch emitted with a
lease (``lease_s``) and, once its transaction has committed, hands the rows straight to its
process's relay (``hand``), which publishes them in the order they were handed, with no
transaction open and no lock held while the broker acknowledges. **Recovered**: a row whose
lease ran out unsent (its process died between commit and publish, or Kafka did not take it
in time), or one written without a lease by other work (a command, a periodic turn: it wakes
the relay with a NOTIFY), is claimed by whichever instance's relay gets to it first (a lease
of its own, ``FOR UPDATE SKIP LOCKED``), so instances never wait on each other.

Sent rows are stamped in batches: the stamps ride on the consumer's next outbox write (no
statement of their own), or, when nothing is written for a moment, in one statement of the
relay's own connection, with ``synchronous_commit`` off. A stamp lost in a crash only sends a
record again, which every consumer skips by event id (its inbox); a record is never lost,
since its row is durable before anything is handed or committed to Kafka.

Ordering: each instance's records leave in the order they were written. When a partition
moves to this instance (a rebalance), the consumer first asks its relay to ``catch_up``: to
publish every row still unsent, whoever's lease it is under, before this instance's newer
records, so that what a previous owner committed and had not published yet leaves first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError

from events import KafkaRecord
from shared.bus.producer import (
    RECORD_FAULTS,
    Fault,
    NotAcknowledged,
    ReliableProducer,
    classify,
)
from shared.db import is_transient

log = logging.getLogger(__name__)

# The headers of each record are flattened into two arrays and sliced back per row, so that a
# batch is one statement; the same statement stamps rows sent since the last write ($8).
_INSERT = """
WITH sent AS (UPDATE outbox SET sent_at = now() WHERE id = ANY($8::bigint[]) AND sent_at IS NULL)
INSERT INTO outbox (topic, key, value, header_names, header_values, lease_until)
SELECT r.topic, r.key, r.value, ($4::text[])[r.h0:r.h1], ($5::bytea[])[r.h0:r.h1],
       now() + make_interval(secs => $9::float8)
  FROM unnest($1::text[], $2::bytea[], $3::bytea[], $6::int[], $7::int[])
       WITH ORDINALITY AS r(topic, key, value, h0, h1, n)
 ORDER BY r.n
RETURNING id
"""
_CLAIM = """
UPDATE outbox o SET lease_until = now() + make_interval(secs => $2::float8)
  FROM (SELECT id FROM outbox
         WHERE sent_at IS NULL AND failed_at IS NULL
           AND ($3::bool OR lease_until IS NULL OR lease_until < now())
           AND NOT (id = ANY($4::bigint[]))
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c
 WHERE o.id = c.id
RETURNING o.id, o.topic, o.key, o.value, o.header_names, o.header_values
"""
SENT_RETENTION = "1 day"  # sent records are kept this long, to see what a service emitted
CLEANUP_EVERY_S = 300.0

# What Kafka will never accept, however often it is sent (shared.bus.producer.classify).
REFUSED_FOR_GOOD = RECORD_FAULTS
# How long one batch may take to reach Kafka before the relay gives it up to the recovery path
# (the producer resends, with a fresh producer where it must, within this).
DELIVER_WITHIN_S = 30.0
# How long a handed row is the writer's to publish before any relay may take it; well above
# a delivery's usual few milliseconds, well below what a crash should cost in latency.
LEASE_S = 10.0
# How long stamps of sent rows wait for a consumer's write to carry them before the relay
# writes them itself.
STAMP_DELAY_S = 0.5


def channel_for(schema: str) -> str:
    return f"{schema}_outbox"


async def write(
    conn: asyncpg.Connection,
    records: Sequence[KafkaRecord],
    *,
    lease_s: float | None = None,
    sent: Sequence[int] = (),
) -> list[int]:
    """Add records to the outbox inside the caller's transaction (one statement); their ids,
    in order. ``lease_s``: the caller hands them to its relay after the commit, and no other
    relay takes them before that long. ``sent``: rows of this outbox the relay has
    published, stamped by the same statement."""
    if not records and not sent:
        return []
    names: list[str] = []
    values: list[bytes | None] = []
    firsts: list[int] = []
    lasts: list[int] = []
    for r in records:
        firsts.append(len(names) + 1)
        for name, value in r.headers:
            names.append(name)
            values.append(value)
        lasts.append(len(names))
    rows = await conn.fetch(
        _INSERT,
        [r.topic for r in records], [r.key for r in records], [r.value for r in records],
        names, values, firsts, lasts, list(sent), lease_s,
    )  # fmt: skip
    return sorted(r["id"] for r in rows)


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Wake the relay when the caller's transaction commits (once per transaction is enough)."""
    await conn.execute(f'NOTIFY "{channel}"')


async def write_and_wake(
    conn: asyncpg.Connection, records: Sequence[KafkaRecord], schema: str
) -> None:
    """Add records to the outbox of ``schema`` and wake its relay at commit (if any records)."""
    if records:
        await write(conn, records)
        await notify(conn, channel_for(schema))


@dataclass
class _CatchUp:
    """A request, in the queue of handed records, to publish every row still unsent first."""

    done: asyncio.Future[None]


@dataclass
class _Handed:
    ids: list[int]
    records: list[KafkaRecord]


@dataclass
class _Rows:
    ids: list[int] = field(default_factory=list)
    records: list[KafkaRecord] = field(default_factory=list)


class OutboxRelay:
    """Publishes the outbox of one service schema with an idempotent producer (acks=all)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: ReliableProducer,
        *,
        dsn: str,
        schema: str,
        batch: int = 500,
        poll_s: float = 1.0,
        deliver_within_s: float = DELIVER_WITHIN_S,
        lease_s: float = LEASE_S,
        stamp_delay_s: float = STAMP_DELAY_S,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._dsn = dsn
        self._schema = schema
        self._channel = channel_for(schema)
        self._batch = batch
        self._poll_s = poll_s
        self._deliver_within_s = deliver_within_s
        self.lease_s = lease_s
        self._stamp_delay_s = stamp_delay_s
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None  # run()'s: a shutdown ends a delivery's retries
        self._queue: deque[_Handed | _CatchUp] = deque()
        self._stamps: list[int] = []  # published, not stamped yet
        self._recover = True  # look for rows to recover (at start, on a NOTIFY, every poll)
        self._conn: asyncpg.Connection | None = None
        self.published = 0
        self._sending = 0  # deliveries under way (for ``idle``)

    @property
    def idle(self) -> bool:
        """Nothing handed to it waits or is being delivered (tests: ``shared.bus.testing``)."""
        return not self._queue and not self._sending

    # -- what the consumer of the same process uses --

    def hand(self, ids: list[int], records: list[KafkaRecord]) -> None:
        """Publish these committed rows next, in this order (after what was handed before)."""
        if ids:
            self._queue.append(_Handed(ids, records))
            self._wake.set()

    def take_stamps(self) -> list[int]:
        """The rows published and not stamped yet, for the caller's next write to stamp (give
        them back with ``give_back`` if its transaction fails)."""
        stamps, self._stamps = self._stamps, []
        return stamps

    def give_back(self, stamps: list[int]) -> None:
        self._stamps[:0] = stamps

    async def catch_up(self, stop: asyncio.Event, timeout_s: float | None = None) -> None:
        """Until every row unsent now (whoever's lease it is under) has been published, after
        what was handed before; at most ``timeout_s`` (default: a delivery's bound), or
        until ``stop``."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_CatchUp(done))
        self._wake.set()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {done, stopping}
        try:
            await asyncio.wait(
                waiting,
                timeout=timeout_s or self._deliver_within_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()

    # -- the relay's own loop --

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop``, then publish what is left (bounded) and return. Whatever
        fails, the relay tries again: its work is idempotent, and a dead relay loses nothing
        but silently stops a service's output, which is worse than a noisy retry."""
        self._stop = stop
        listener: asyncpg.Connection | None = None
        backoff = 0.1
        loop = asyncio.get_running_loop()
        next_cleanup = loop.time() + CLEANUP_EVERY_S
        try:
            while not stop.is_set():
                try:
                    if listener is None or listener.is_closed():
                        listener = await self._listen()
                        self._recover = True  # a NOTIFY may have been missed meanwhile
                    self._wake.clear()
                    busy = await self._turn()
                    if loop.time() >= next_cleanup:
                        await self._forget_sent()
                        next_cleanup = loop.time() + CLEANUP_EVERY_S
                    backoff = 0.1
                    if busy:
                        continue
                    if self._stamps:  # a consumer's write may carry them; else write them
                        if not await self._woken(stop, self._stamp_delay_s):
                            await self._write_stamps()
                        continue
                    if not await self._woken(stop, self._poll_s):
                        self._recover = True  # a poll: rows of a process that died
                except Exception as exc:
                    expected = isinstance(exc, KafkaError | NotAcknowledged) or is_transient(exc)
                    log.log(
                        logging.WARNING if expected else logging.ERROR,
                        "outbox relay of %s: %r; retrying in %.1fs", self._schema, exc, backoff,
                        exc_info=not expected,
                    )  # fmt: skip
                    if listener is not None:
                        await _close_quietly(listener)
                    listener = None
                    await self._drop_conn()
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
            await self._final_drain()
        finally:
            if listener is not None:
                await _close_quietly(listener)
            await self._drop_conn()

    async def _turn(self) -> bool:
        """One step: the next handed records, a catch-up, or a recovery; True if it did work
        and there may be more at once."""
        if self._queue and isinstance(self._queue[0], _CatchUp):
            request = self._queue.popleft()
            assert isinstance(request, _CatchUp)
            while await self._recover_rows(everyone=True) >= self._batch:
                pass
            if not request.done.done():
                request.done.set_result(None)
            return True
        if self._queue:
            await self._send(self._take_handed())
            return True
        if self._recover:
            self._recover = False
            if await self._recover_rows(everyone=False) >= self._batch:
                self._recover = True
                return True
        return False

    def _take_handed(self) -> _Rows:
        rows = _Rows()
        while self._queue and isinstance(self._queue[0], _Handed):
            if rows.ids and len(rows.ids) + len(self._queue[0].ids) > self._batch:
                break
            handed = self._queue.popleft()
            assert isinstance(handed, _Handed)
            rows.ids += handed.ids
            rows.records += handed.records
        return rows

    async def drain_once(self) -> int:
        """Publish up to one batch of unsent rows that are anyone's (a lease run out, or
        none); how many were claimed."""
        return await self._recover_rows(everyone=False)

    async def _recover_rows(self, *, everyone: bool) -> int:
        """Claim and publish up to one batch of unsent rows: those under no lease or one run
        out, or (``everyone``) all of them but those handed to this relay and not sent yet."""
        conn = await self._connection()
        # not those waiting here to be sent, nor those sent and not stamped yet
        mine = [i for item in self._queue if isinstance(item, _Handed) for i in item.ids]
        mine += self._stamps
        claimed = await conn.fetch(_CLAIM, self._batch, self._deliver_within_s, everyone, mine)
        if not claimed:
            return 0
        rows = _Rows()
        for row in sorted(claimed, key=lambda r: r["id"]):
            rows.ids.append(row["id"])
            rows.records.append(
                KafkaRecord(
                    topic=row["topic"],
                    key=row["key"],
                    value=row["value"],
                    headers=tuple(zip(row["header_names"], row["header_values"], strict=True)),
                )
            )
        await self._send(rows)
        return len(rows.ids)

    async def _send(self, rows: _Rows) -> None:
        """Publish ``rows`` in order. The producer resends within the batch what the broker did
        not acknowledge (with a fresh producer after a restart or a fencing: see
        shared.bus.producer), for at most ``deliver_within_s``. What the broker acknowledged is
        to be stamped sent; a record Kafka refuses for good (too large, an invalid topic) is
        set aside with the reason and no longer blocks the rest; anything else is given up to
        the recovery path (its lease released) and the error raised, so the relay backs off
        and tries again. A record resent may be on the topic twice; consumers skip it by id."""
        self._sending += 1
        try:
            results = await self._producer.deliver(
                rows.records, within_s=self._deliver_within_s, stop=self._stop
            )
        finally:
            self._sending -= 1
        retry_error: BaseException | None = None
        refused: list[tuple[int, str]] = []
        unsent: list[int] = []
        for row_id, record, error in zip(rows.ids, rows.records, results, strict=True):
            if error is None:
                self._stamps.append(row_id)
            elif classify(error) is Fault.RECORD:
                log.error(
                    "outbox of %s: record %d to %s refused by Kafka for good, set aside: %r",
                    self._schema, row_id, record.topic, error,
                )  # fmt: skip
                refused.append((row_id, repr(error)))
            else:
                unsent.append(row_id)
                retry_error = retry_error or error
        self.published += len(rows.ids) - len(refused) - len(unsent)
        if refused or unsent:
            conn = await self._connection()
            if refused:
                await conn.executemany(
                    "UPDATE outbox SET failed_at = now(), error = $2 WHERE id = $1", refused
                )
            if unsent:
                await conn.execute(
                    "UPDATE outbox SET lease_until = NULL WHERE id = ANY($1::bigint[])", unsent
                )
                self._recover = True
        if len(self._stamps) >= self._batch:
            await self._write_stamps()
        if retry_error is not None:
            raise retry_error

    async def _write_stamps(self) -> None:
        stamps = self.take_stamps()
        if not stamps:
            return
        try:
            conn = await self._connection()
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[]) "
                "AND sent_at IS NULL",
                stamps,
            )
        except BaseException:
            self.give_back(stamps)
            raise

    async def _connection(self) -> asyncpg.Connection:
        """The relay's own connection, kept: its writes (claims, stamps) are hints that a
        crash may lose at no cost but a resend, so they commit without waiting for the disk."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                server_settings={"search_path": self._schema, "synchronous_commit": "off"},
            )
        return self._conn

    async def _drop_conn(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await _close_quietly(conn)

    async def _forget_sent(self) -> None:
        conn = await self._connection()
        await conn.execute(
            f"DELETE FROM outbox WHERE sent_at < now() - interval '{SENT_RETENTION}'"
        )

    async def _listen(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(self._channel, lambda *_: self._on_notify())
        # If the connection drops, wake up now: the next turn reconnects and drains.
        conn.add_termination_listener(lambda *_: self._wake.set())
        return conn

    def _on_notify(self) -> None:
        self._recover = True
        self._wake.set()

    async def _woken(self, stop: asyncio.Event, timeout_s: float) -> bool:
        """Sleep until woken (True) or ``timeout_s`` passed (False), or ``stop``."""
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waiters:
                w.cancel()
        return bool(done)

    async def _final_drain(self, budget_s: float = 5.0) -> None:
        """On shutdown, publish what is left (what the consumer's last batch handed over, then
        anything recoverable), within a bounded time; the rest waits for a restart."""
        try:
            async with asyncio.timeout(budget_s):
                self._recover = True
                while await self._turn():
                    pass
                await self._write_stamps()
        except Exception as exc:
            log.warning(
                "outbox of %s not fully drained at shutdown (%s); it is kept", self._schema, exc
            )
        for item in self._queue:  # never left waiting
            if isinstance(item, _CatchUp) and not item.done.done():
                item.done.set_result(None)


async def _close_quietly(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2)
    if not conn.is_closed():
        conn.terminate()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
