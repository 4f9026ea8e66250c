"""What a service declares: which event types it handles, and with which coroutine.

A handler is ``async def on_x(event: X, ctx: HandlerContext) -> None``. It runs inside the
transaction that also records the event in the inbox; ``ctx.conn`` is that transaction's
connection and ``ctx.emit`` adds an event to the outbox of the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from opentelemetry.trace import Span, Tracer

from events import CDEvent, KafkaRecord, encode
from shared.clock import Clock, system_clock
from shared.settings import Settings
from shared.telemetry import current_trace_headers

Handler = Callable[[Any, "HandlerContext"], Awaitable[None]]


@dataclass
class HandlerContext:
    conn: asyncpg.Connection
    settings: Settings
    record: KafkaRecord | None  # None on a periodic turn
    span: Span
    clock: Clock = system_clock
    tracer: Tracer | None = None  # for spans of a handler's own (a periodic turn)
    emitted: list[KafkaRecord] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock()

    def emit(self, event: CDEvent) -> None:
        """Queue ``event`` for the outbox of this transaction (written if the handler succeeds),
        carrying the current span's context so the next service's span is its child."""
        self.emitted.append(
            encode(
                event, topic=self.settings.topic(event.TOPIC), trace_headers=current_trace_headers()
            )
        )


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

    def handles_type(self, model: type[CDEvent]) -> bool:
        return model in self._handlers

    @property
    def topics(self) -> set[str]:
        """The logical topics this service must read."""
        return {model.TOPIC for model in self._handlers}

    @property
    def event_types(self) -> list[str]:
        return [model.TYPE for model in self._handlers]
