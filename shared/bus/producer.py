"""An idempotent Kafka producer (acks=all) that can be rebuilt after a fatal error.

aiokafka's idempotent producer can stay stuck on OutOfOrderSequenceNumber after a broker blip
(aio-libs/aiokafka#1017); ``reset`` drops it and the next send starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

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
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # a producer that failed to start still holds sockets
                raise
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def reset(self) -> None:
        """Drop the producer (it may be wedged); the next send starts a fresh one."""
        with contextlib.suppress(Exception):  # a broken producer may fail to close
            await self.stop()
        self._producer = None

    async def send_each(self, records: Sequence[KafkaRecord]) -> list[BaseException | None]:
        """Send every record; wait for each acknowledgement. Returns, per record, None if the
        broker has it, or the error. Raises only if the producer cannot start at all."""
        await self.start()
        assert self._producer is not None
        futures: list[asyncio.Future[object]] = []
        for r in records:
            try:
                futures.append(
                    await self._producer.send(
                        r.topic, value=r.value, key=r.key, headers=list(r.headers)
                    )
                )
            except KafkaError as exc:  # refused before it was queued (e.g. too large)
                failed: asyncio.Future[object] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                futures.append(failed)
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def send_all(self, records: Sequence[KafkaRecord]) -> None:
        """Send every record and wait until the broker has acknowledged all of them."""
        for error in await self.send_each(records):
            if error is not None:
                raise error
