"""When awaited events arrive: consumers placed at the end of a topic before anything is sent.

- ``Observer``: every partition of a topic assigned (no consumer group), positions resolved
  up front; notes the first arrival of each id a ``Matcher`` names, and counts the same
  announcement again (redelivered) apart from a different one for the same id (duplicate).
- ``Arrivals``: a consumer in the group ``<ns>.bench-watch`` that notes, for each event a
  ``key`` function names, the first time it was consumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from events import CDEvent, InvalidEvent, decode
from shared.bus.consumer import record_from_kafka
from shared.bus.kafka_client import kafka_consumer
from shared.settings import Settings


def header(record: Any, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", errors="replace")
    return None


@dataclass(frozen=True, slots=True)
class Arrival:
    perf: float  # time.perf_counter() when the consumer returned the record
    wall_ns: int  # the same moment, wall clock (to compare with spans and record timestamps)
    created_ms: int  # the record's Kafka timestamp (CreateTime: the producer's send time)
    partition: int


Matcher = Callable[[Any, Counter[str]], str | None]


def match_ce_id(record: Any, counts: Counter[str]) -> str | None:
    return header(record, "ce_id")


class Observer:
    """Reads every partition of a topic from its end (positioned before anything is sent) and
    notes when each awaited id arrives."""

    def __init__(
        self, settings: Settings, partitions: list[TopicPartition], match: Matcher
    ) -> None:
        self._settings = settings
        self._partitions = partitions
        self._match = match
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.seen: dict[str, Arrival] = {}
        self.duplicates = 0  # a second, different announcement for one id (a real double)
        self.redelivered = 0  # the same announcement (same ce_id) again: at-least-once relay
        self._ce_ids: dict[str, str | None] = {}
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        consumer = kafka_consumer(
            self._settings,
            client_id="bench-observer",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumer = consumer
        consumer.assign(self._partitions)
        await consumer.seek_to_end(*self._partitions)
        for tp in self._partitions:  # resolve the end offsets now, before anything is published
            await consumer.position(tp)
        self._task = asyncio.create_task(self._run(consumer), name="observer")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            if not batches:
                continue
            perf, wall = time.perf_counter(), time.time_ns()
            for records in batches.values():
                for r in records:
                    key = self._match(r, self.counts)
                    if key is None:
                        continue
                    ce_id = header(r, "ce_id")
                    if key not in self.seen:
                        self.seen[key] = Arrival(perf, wall, r.timestamp, r.partition)
                        self._ce_ids[key] = ce_id
                    elif self._ce_ids[key] == ce_id:
                        self.redelivered += 1
                    else:
                        self.duplicates += 1

    async def wait_for(
        self, ids: Sequence[str], timeout_s: float, alive: Callable[[], None]
    ) -> list[str]:
        """Wait until every id has arrived or ``timeout_s`` passed; returns the missing ones."""
        missing = set(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            missing = {i for i in missing if i not in self.seen}
            if not missing or time.monotonic() > deadline:
                return sorted(missing)
            if self._task is not None and self._task.done():
                raise RuntimeError(f"observer stopped: {self._task.exception()!r}")
            alive()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


class Arrivals:
    def __init__(
        self, settings: Settings, topic: str, key: Callable[[CDEvent], Hashable | None]
    ) -> None:
        self.seen: dict[Hashable, float] = {}
        self._key = key
        self._consumer = kafka_consumer(
            settings,
            settings.topic(topic),
            group_id=f"{settings.namespace}.bench-watch",
            auto_offset_reset="latest",
        )
        self._task: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        self._started = True
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
            await asyncio.gather(self._task, return_exceptions=True)
        if self._started:
            await self._consumer.stop()
