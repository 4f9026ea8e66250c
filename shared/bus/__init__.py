"""The bus every service runs on: read events from Kafka, handle each exactly once against
Postgres (inbox), publish what handlers emit through the outbox, dead-letter what cannot be read
or handled, and commit offsets only after the database has committed (docs/architecture.md,
"Effectively once")."""

from shared.bus.handlers import HandlerContext, Router
from shared.bus.publisher import (
    EventRefused,
    KafkaUnreachable,
    Publisher,
    PublishError,
    PublishTimedOut,
)

__all__ = [
    "EventRefused",
    "HandlerContext",
    "KafkaUnreachable",
    "PublishError",
    "PublishTimedOut",
    "Publisher",
    "Router",
]
