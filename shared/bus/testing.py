"""Services on the in-memory twin of the broker, for fast tests of handlers: the bus's own
code (inbox, outbox, relay, retries, dead letters) against the real Postgres, with no Kafka.

    async with TwinBus(settings) as bus:                  # a namespace of its own
        await bus.start(ARTIFACTS)                        # the service's spec, as `lockstep run`
        await bus.publish(ArtifactPackaged.build(...))
        await bus.settle()                                # until every service is done
        [published] = bus.events(ArtifactPublished)
        assert bus.dead_letters() == []

``settle`` waits until every running service has committed everything on its topics and its
relay has published what its handlers emitted, and that holds a moment later too (an event
emitted sets off the next service). What the twin does not model is in docs/testing.md and
``shared.bus.memory``; a test that needs the real broker (restarts, logins, ACLs) belongs in
tests/integration, with the ``new_namespace`` fixture. ``settings.namespace`` must not be the
default one: on leaving, the namespace's schemas are dropped."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import TypeVar

from events import CDEvent, InvalidEvent, KafkaRecord, decode, topics
from events.signing import SigningKey
from shared.bus.memory import MemoryKafka, MemoryTransport
from shared.bus.publisher import Publisher
from shared.clock import Clock, system_clock
from shared.db import drop_namespace_schemas
from shared.service import RunningService, ServiceSpec
from shared.settings import Settings

E = TypeVar("E", bound=CDEvent)


class TwinBus:
    def __init__(self, settings: Settings, *, clock: Clock = system_clock) -> None:
        if settings.namespace == "lockstep":
            raise ValueError("a TwinBus drops its namespace's schemas: give it a namespace")
        self.settings = settings
        self.kafka = MemoryKafka(default_partitions=settings.topic_partitions)
        self.kafka.ensure_topics(settings)
        self.transport = MemoryTransport(self.kafka)
        self.clock = clock
        self.services: list[RunningService] = []

    async def __aenter__(self) -> TwinBus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for service in reversed(self.services):
                if not service.killed:
                    await service.stop()
        finally:
            self.services = []
            await drop_namespace_schemas(self.settings)

    async def start(self, spec: ServiceSpec) -> RunningService:
        """``spec`` running on the twin (its schema migrated), its partitions assigned."""
        service = RunningService(spec, self.settings, clock=self.clock, transport=self.transport)
        await service.setup()
        self.services.append(service)
        service.start()
        assert service.consumer is not None
        await asyncio.wait_for(service.consumer.assigned.wait(), 10)
        return service

    async def publish(self, *events: CDEvent, signing_key: SigningKey | None = None) -> None:
        """Publish ``events`` as ``lockstep publish`` would (a decision signed with
        ``signing_key``)."""
        async with Publisher(
            self.settings, signing_key=signing_key, transport=self.transport
        ) as publisher:
            for event in events:
                await publisher.publish(event)

    async def send_raw(self, *records: KafkaRecord) -> None:
        """Records exactly as given (malformed ones, say)."""
        async with Publisher(self.settings, transport=self.transport) as publisher:
            await publisher.send_raw(list(records))

    def records(self, logical: str | None = None) -> list[KafkaRecord]:
        """Every record on the namespace's topics (or on ``logical``'s), in each partition's
        order."""
        names = [self.settings.topic(logical)] if logical else self.settings.all_topics()
        return [
            KafkaRecord.from_consumer_record(r) for name in names for r in self.kafka.records(name)
        ]

    def events(self, kind: type[E] | None = None) -> list[E]:
        """The events on the namespace's topics (of ``kind``), dead letters aside."""
        found = []
        for record in self.records():
            if record.topic == self.settings.topic(topics.DLQ):
                continue
            try:
                event = decode(record, max_bytes=10**9).event
            except InvalidEvent:
                continue
            if kind is None or isinstance(event, kind):
                found.append(event)
        return found  # type: ignore[return-value]

    def dead_letters(self) -> list[KafkaRecord]:
        return self.records(topics.DLQ)

    def _settled(self) -> bool:
        for service in self.services:
            if service.killed or service.consumer is None or service.relay is None:
                continue
            if not service.relay.idle:
                return False
            group = self.settings.group_id(service.spec.name)
            for logical in service.spec.router.topics:
                for tp in self.kafka.partitions(self.settings.topic(logical)):
                    if (self.kafka.committed(group, tp) or 0) < self.kafka.end_offset(tp):
                        return False
        return True

    async def settle(self, timeout_s: float = 10.0) -> None:
        """Until every service has handled and committed everything on its topics and
        published what it emitted (``TimeoutError`` after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            calm = 0
            while calm < 3:
                await asyncio.sleep(0.02)
                calm = calm + 1 if self._settled() else 0
