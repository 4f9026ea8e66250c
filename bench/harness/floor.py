"""The bare-Kafka floor: what the same load costs through plain aiokafka, with as many
consume->produce hops (each its own process, ``hop.py``) as the Lockstep path has services.

A bare producer (``ReliableProducer``'s settings: idempotent, acks=all, the namespace's
linger) sends to the first of the floor's topics; hop *i* consumes topic *i*, produces to
topic *i+1* and commits; an ``Observer`` reads the last topic. The topics and the hops'
consumer groups are named ``<ns>.…``, so the run's clean-up removes them with the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiokafka import AIOKafkaProducer

from events import CDEvent, encode
from harness.arrivals import Observer, header, match_ce_id
from harness.children import Child
from harness.load import Item
from harness.namespace import create_topics
from harness.run import Run
from shared.bus.admin import partitions_of
from shared.bus.kafka_client import kafka_producer

HOP = Path(__file__).resolve().with_name("hop.py")


class Floor:
    def __init__(self, run: Run, topics: list[str], groups: list[str], names: list[str]) -> None:
        assert len(topics) == len(groups) + 1 == len(names) + 1
        self._run = run
        self.topics = topics
        self._groups = groups
        self._names = names
        self.hops: list[Child] = []
        self.sizes: list[int] = []
        self.observer: Observer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        run, settings = self._run, self._run.settings
        await create_topics(settings, self.topics)
        last = await partitions_of(settings, [self.topics[-1]])
        self.observer = Observer(settings, last, match_ce_id)
        await self.observer.start()
        run.closing(self.observer.stop)
        for i, (group, name) in enumerate(zip(self._groups, self._names, strict=True)):
            hop = run.child(
                name,
                [
                    sys.executable,
                    str(HOP),
                    f"--src={self.topics[i]}",
                    f"--dst={self.topics[i + 1]}",
                    f"--group={group}",
                    f"--bootstrap={settings.kafka_bootstrap}",
                    f"--linger-ms={settings.producer_linger_ms}",
                ],
                name.replace(" ", "-") + ".log",
            )
            hop.start()
            self.hops.append(hop)
        self._producer = kafka_producer(  # what ReliableProducer builds, minus its wrapper
            settings,
            client_id="bench-floor-producer",
            enable_idempotence=True,
            acks="all",
            linger_ms=settings.producer_linger_ms,
        )
        await self._producer.start()
        run.closing(self._producer.stop)

    def item(self, event: CDEvent) -> Item:
        """``event`` encoded as Lockstep would put it on the first topic (same size, same
        headers), keyed by its ce_id."""
        producer, src = self._producer, self.topics[0]
        assert producer is not None
        record = encode(event, topic=src)
        self.sizes.append(len(record.value or b""))

        async def send() -> None:
            future = await producer.send(
                src, value=record.value, key=record.key, headers=list(record.headers)
            )
            await future

        return header(record, "ce_id") or "", send

    def alive(self) -> None:
        for hop in self.hops:
            hop.alive()

    @property
    def value_bytes(self) -> int | None:
        return round(sum(self.sizes) / len(self.sizes)) if self.sizes else None

    async def stop(self) -> dict[str, int | None]:
        """Producer, observer, then the hops (SIGTERM); their exit codes by name."""
        if self._producer is not None:
            await self._producer.stop()
            self._run.closed(self._producer.stop)
        if self.observer is not None:
            await self.observer.stop()
            self._run.closed(self.observer.stop)
        return {h.name: await h.stop() for h in self.hops}
