"""When events arrive: a consumer placed at the end of one topic that notes, for each event
a ``key`` function names, the first time it was consumed (``time.perf_counter``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable

from aiokafka import AIOKafkaConsumer

from events import CDEvent, InvalidEvent, decode
from shared.bus.consumer import record_from_kafka
from shared.settings import Settings


class Arrivals:
    def __init__(
        self, settings: Settings, topic: str, key: Callable[[CDEvent], Hashable | None]
    ) -> None:
        self.seen: dict[Hashable, float] = {}
        self._key = key
        self._consumer = AIOKafkaConsumer(
            settings.topic(topic),
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"{settings.namespace}.bench-watch",
            auto_offset_reset="latest",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        while not self._consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event
            await asyncio.sleep(0.05)
        for tp in self._consumer.assignment():
            await self._consumer.seek_to_end(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            try:
                event = decode(record_from_kafka(record)).event
            except InvalidEvent:
                continue
            found = self._key(event)
            if found is not None:
                self.seen.setdefault(found, time.perf_counter())

    async def wait(self, key: Hashable, timeout_s: float = 30) -> float:
        deadline = time.perf_counter() + timeout_s
        while key not in self.seen:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{key!r} never arrived")
            await asyncio.sleep(0.001)
        return self.seen[key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()
