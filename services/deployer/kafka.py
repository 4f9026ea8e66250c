"""The agent's own Kafka part, on aiokafka alone: an idempotent producer that is rebuilt when
it wedges. Reading that no record can stop (``events.kafka.SafeFetcher``) and dead letters
(``events.kafka.dead_letter``, the shape Lockstep's runtime gives its own) are the contract's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId

from events import KafkaRecord, topics

log = logging.getLogger(__name__)

# aiokafka's idempotent producer stays stuck after these (aio-libs/aiokafka#1017): only a
# new producer (a new producer id) sends again.
WEDGED = (OutOfOrderSequenceNumber, UnknownProducerId)


class ReportProducer:
    """Sends one record at a time and waits for the broker (acks=all, idempotent)."""

    def __init__(
        self, bootstrap_servers: str, *, client_id: str, security: dict[str, str] | None = None
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._security = security or {}  # AgentConfig.kafka_security()
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                **self._security,
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


# An aiokafka ConsumerRecord as the contract's KafkaRecord, whatever it holds (never raises);
# dead letters are the contract's too (``events.kafka.dead_letter``), as the runtime writes them.
record_of = KafkaRecord.from_consumer_record
