"""What a service declares: which event types it handles, and with which coroutine.

A handler is ``async def on_x(event: X, ctx: HandlerContext) -> None``. It runs inside the
transaction that also records the event in the inbox; ``ctx.conn`` is that transaction's
connection and ``ctx.emit`` adds an event to the outbox of the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from opentelemetry.trace import Span

from events import CDEvent, KafkaRecord, encode
from shared.bus import outbox
from shared.settings import Settings
from shared.telemetry import current_trace_headers

E = TypeVar("E", bound=CDEvent)
Handler = Callable[[Any, "HandlerContext"], Awaitable[None]]


@dataclass
class HandlerContext:
    conn: asyncpg.Connection
    settings: Settings
    record: KafkaRecord
    span: Span
    _pending: list[KafkaRecord] = field(default_factory=list)

    def emit(self, event: CDEvent) -> None:
        """Queue ``event`` for the outbox; it is written when the handler's transaction commits,
        carrying the current span's context so the next service's span is its child."""
        self._pending.append(
            encode(
                event, topic=self.settings.topic(event.TOPIC), trace_headers=current_trace_headers()
            )
        )

    async def flush(self, channel: str) -> None:
        if self._pending:
            await outbox.write(self.conn, self._pending, channel)
            self._pending.clear()


class Router:
    """Maps event types to handlers. One handler per type; unknown types are not this service's."""

    def __init__(self) -> None:
        self._handlers: dict[type[CDEvent], Handler] = {}

    def handles(self, *models: type[CDEvent]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            for model in models:
                if model in self._handlers:
                    raise ValueError(f"{model.TYPE} already has a handler")
                self._handlers[model] = fn
            return fn

        return register

    def handler_for(self, event: CDEvent) -> Handler | None:
        return self._handlers.get(type(event))

    @property
    def topics(self) -> set[str]:
        """The logical topics this service must read."""
        return {model.TOPIC for model in self._handlers}

    @property
    def event_types(self) -> list[str]:
        return [model.TYPE for model in self._handlers]
