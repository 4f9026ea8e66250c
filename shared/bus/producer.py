"""An idempotent Kafka producer (acks=all) that can be rebuilt after a fatal error.

aiokafka's idempotent producer can stay stuck on OutOfOrderSequenceNumber after a broker blip
(aio-libs/aiokafka#1017); ``restart`` replaces it with a fresh one (a new producer id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from events import KafkaRecord
from events.topics import DLQ_MAX_MESSAGE_BYTES
from shared.settings import Settings


class ReliableProducer:
    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    def _new(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self._settings.producer_linger_ms,
            # Room for a dead letter: any record the broker accepted, plus why it failed.
            max_request_size=DLQ_MAX_MESSAGE_BYTES,
            request_timeout_ms=15000,
        )

    async def start(self) -> None:
        if self._producer is None:
            producer = self._new()
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def restart(self) -> None:
        try:
            await self.stop()
        except Exception:
            self._producer = None
        await self.start()

    async def send_all(self, records: Sequence[KafkaRecord]) -> None:
        """Send every record and wait until the broker has acknowledged all of them."""
        await self.start()
        assert self._producer is not None
        futures: list[asyncio.Future[object]] = []
        try:
            for r in records:
                futures.append(
                    await self._producer.send(
                        r.topic, value=r.value, key=r.key, headers=list(r.headers)
                    )
                )
        finally:
            # Every send that was queued is awaited, even when a later one failed.
            results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
