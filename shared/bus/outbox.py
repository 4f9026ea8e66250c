"""The outbox: records written in a handler's transaction, published later by the relay.

The relay holds a transaction-scoped advisory lock while it publishes, so of several instances
of one service only one relay publishes at a time and records leave in the order they were
written. A crash after publishing but before stamping ``sent_at`` re-publishes those records;
consumers skip them by event id (inbox). Nothing is lost and nothing is handled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence

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

_INSERT = (
    "INSERT INTO outbox (topic, key, value, header_names, header_values) "
    "VALUES ($1, $2, $3, $4, $5)"
)
SENT_RETENTION = "1 day"  # sent records are kept this long, to see what a service emitted
CLEANUP_EVERY_S = 300.0

# What Kafka will never accept, however often it is sent (shared.bus.producer.classify).
REFUSED_FOR_GOOD = RECORD_FAULTS
# How long one batch may take to reach Kafka before the relay commits what did and tries the
# rest again (the producer resends, with a fresh producer where it must, within this).
DELIVER_WITHIN_S = 30.0


def channel_for(schema: str) -> str:
    return f"{schema}_outbox"


async def write(conn: asyncpg.Connection, records: Sequence[KafkaRecord]) -> None:
    """Add records to the outbox inside the caller's transaction."""
    await conn.executemany(
        _INSERT,
        [
            (r.topic, r.key, r.value, [h[0] for h in r.headers], [h[1] for h in r.headers])
            for r in records
        ],
    )


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
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._dsn = dsn
        self._schema = schema
        self._channel = channel_for(schema)
        self._batch = batch
        self._poll_s = poll_s
        self._deliver_within_s = deliver_within_s
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None  # run()'s: a shutdown ends a delivery's retries
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"relay:{schema}".encode()).digest()[:8], "big", signed=True
        )
        self.published = 0

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
                    self._wake.clear()
                    sent = await self.drain_once()
                    if loop.time() >= next_cleanup:
                        await self._forget_sent()
                        next_cleanup = loop.time() + CLEANUP_EVERY_S
                    backoff = 0.1
                    if sent >= self._batch:
                        continue  # more waiting: go straight on
                    await self._sleep_until_woken(stop)
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
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 5.0)
            await self._final_drain()
        finally:
            if listener is not None:
                await _close_quietly(listener)

    async def drain_once(self) -> int:
        """Publish up to one batch of unsent records; returns how many were published.

        The producer resends within the batch what the broker did not acknowledge (with a
        fresh producer after a restart or a fencing: see shared.bus.producer), for at most
        ``deliver_within_s``. Records the broker acknowledged are stamped sent even when others
        in the batch were not, so a failure does not send them again and again. A record Kafka
        refuses for good (too large, an invalid topic) is set aside with the reason and no
        longer blocks the rest; any other failure is raised after the stamps are committed,
        and retried. A record resent may be on the topic twice; consumers skip it by id."""
        retry_error: BaseException | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return 0  # another instance of this service is publishing
            rows = await conn.fetch(
                "SELECT id, topic, key, value, header_names, header_values FROM outbox "
                "WHERE sent_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1",
                self._batch,
            )
            if not rows:
                return 0
            results = await self._producer.deliver(
                [
                    KafkaRecord(
                        topic=row["topic"],
                        key=row["key"],
                        value=row["value"],
                        headers=tuple(zip(row["header_names"], row["header_values"], strict=True)),
                    )
                    for row in rows
                ],
                within_s=self._deliver_within_s,
                stop=self._stop,
            )
            sent = [row["id"] for row, error in zip(rows, results, strict=True) if error is None]
            await conn.execute(
                "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", sent
            )
            for row, error in zip(rows, results, strict=True):
                if error is None:
                    continue
                if classify(error) is Fault.RECORD:
                    log.error(
                        "outbox of %s: record %d to %s refused by Kafka for good, set aside: %r",
                        self._schema, row["id"], row["topic"], error,
                    )  # fmt: skip
                    await conn.execute(
                        "UPDATE outbox SET failed_at = now(), error = $2 WHERE id = $1",
                        row["id"], repr(error),
                    )  # fmt: skip
                elif retry_error is None:
                    retry_error = error
        self.published += len(sent)
        if retry_error is not None:
            raise retry_error
        return len(rows)

    async def _forget_sent(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"DELETE FROM outbox WHERE sent_at < now() - interval '{SENT_RETENTION}'"
            )

    async def _listen(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self._dsn)
        await conn.add_listener(self._channel, lambda *_: self._wake.set())
        # If the connection drops, wake up now: the next turn reconnects and drains.
        conn.add_termination_listener(lambda *_: self._wake.set())
        return conn

    async def _sleep_until_woken(self, stop: asyncio.Event) -> None:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _final_drain(self, budget_s: float = 5.0) -> None:
        """On shutdown, publish what is left, within a bounded time; the rest waits for restart."""
        try:
            async with asyncio.timeout(budget_s):
                while await self.drain_once() >= self._batch:
                    pass
        except Exception as exc:
            log.warning(
                "outbox of %s not fully drained at shutdown (%s); it is kept", self._schema, exc
            )


async def _close_quietly(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2)
    if not conn.is_closed():
        conn.terminate()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
