"""The agent's few Kafka parts, on aiokafka alone: an idempotent producer that is rebuilt
when it wedges, a safe conversion of what the consumer hands over, and dead letters.

The dead letter has the shape Lockstep's runtime gives its own (``lockstep.dlq.*``
headers, see ``events.topics.DLQ_HEADER_PREFIX``): the record as it was, plus why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId

from events import KafkaRecord, topics

log = logging.getLogger(__name__)

# aiokafka's idempotent producer stays stuck after these (aio-libs/aiokafka#1017): only a
# new producer (a new producer id) sends again.
WEDGED = (OutOfOrderSequenceNumber, UnknownProducerId)


class ReportProducer:
    """Sends one record at a time and waits for the broker (acks=all, idempotent)."""

    def __init__(self, bootstrap_servers: str, *, client_id: str) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                enable_idempotence=True,
                acks="all",
                max_request_size=topics.DLQ_MAX_MESSAGE_BYTES,  # room for a dead letter
                request_timeout_ms=15000,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # one that failed to start still holds sockets
                raise
            self._producer = producer
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):  # a wedged producer may fail to close
                await producer.stop()

    async def send(self, record: KafkaRecord) -> None:
        """Send and wait for the acknowledgement; raises KafkaError (after dropping a wedged
        producer, so that the next send starts a fresh one)."""
        producer = await self._started()
        try:
            future = await producer.send(
                record.topic, value=record.value, key=record.key, headers=list(record.headers)
            )
            await future
        except WEDGED:
            await self.stop()
            raise

    async def send_until_acked(
        self, record: KafkaRecord, stop: asyncio.Event, *, backoff_s: float = 0.5
    ) -> bool:
        """Send until the broker has it (True), or until ``stop`` is set (False). A broker
        away or a wedged producer is waited out, never a reason to drop the record."""
        delay = backoff_s
        while True:
            try:
                await self.send(record)
                return True
            except (KafkaError, OSError) as exc:
                log.warning("deployer: sending to %s failed (%r); trying again", record.topic, exc)
            if stop.is_set():
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)


def record_of(r: Any) -> KafkaRecord:
    """An aiokafka ConsumerRecord as the contract's KafkaRecord, whatever it holds; nothing
    here raises (``KafkaRecord.from_consumer_record`` where the contract has it)."""
    from_consumer = getattr(KafkaRecord, "from_consumer_record", None)
    if from_consumer is not None:  # the contract's own conversion, where it has one
        converted: KafkaRecord = from_consumer(r)
        return converted
    try:
        headers = tuple(
            (str(name), value if isinstance(value, bytes) else None)
            for name, value in (getattr(r, "headers", None) or ())
        )
        key, value = getattr(r, "key", None), getattr(r, "value", None)
        return KafkaRecord(
            topic=str(getattr(r, "topic", "")),
            key=key if isinstance(key, bytes) else None,
            value=value if isinstance(value, bytes) else None,
            headers=headers,
            partition=int(getattr(r, "partition", -1)),
            offset=int(getattr(r, "offset", -1)),
        )
    except Exception:  # a record that breaks every expectation: decode refuses it (no value)
        return KafkaRecord(topic=str(getattr(r, "topic", "")), key=None, value=None)


def dead_letter(
    record: KafkaRecord, *, dlq_topic: str, error: str, stage: str, group: str
) -> KafkaRecord:
    """``record`` as it was (key, value, headers) for ``dlq_topic``, with the reason."""
    prefix = topics.DLQ_HEADER_PREFIX
    why = {
        "error": error,
        "stage": stage,
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "group": group,
        "attempts": "1",
        "failed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    kept = tuple(
        (name.replace("\x00", "\ufffd"), value)
        for name, value in record.headers
        if not name.startswith(prefix)
    )
    extra = tuple((prefix + k, v.encode()) for k, v in why.items())
    return KafkaRecord(topic=dlq_topic, key=record.key, value=record.value, headers=kept + extra)
