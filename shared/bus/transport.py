"""Where a service's Kafka clients come from: the real broker (``KAFKA``), or the in-memory
twin of it for tests (``shared.bus.memory``). The consumer and the relay's producer are made
through a ``Transport``; everything above them (inbox, outbox, dead letters, retries) is the
same code either way."""

from __future__ import annotations

from typing import Any, Protocol

from shared.settings import Settings


class Transport(Protocol):
    def consumer(self, settings: Settings, *topics: str, **config: Any) -> Any:
        """A consumer with aiokafka's ``AIOKafkaConsumer`` face (start, stop, getmany,
        assignment, position, seek, commit), of ``topics``."""

    def producer(self, settings: Settings, **config: Any) -> Any:
        """A producer with aiokafka's ``AIOKafkaProducer`` face (start, stop, send)."""


class KafkaTransport:
    """The real broker, logged in as the settings' principal (``shared.bus.kafka_client``)."""

    def consumer(self, settings: Settings, *topics: str, **config: Any) -> Any:
        from shared.bus.kafka_client import kafka_consumer

        return kafka_consumer(settings, *topics, **config)

    def producer(self, settings: Settings, **config: Any) -> Any:
        from shared.bus.kafka_client import kafka_producer

        return kafka_producer(settings, **config)


KAFKA: Transport = KafkaTransport()
