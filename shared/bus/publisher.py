"""Publishing from outside the mesh: what a CI system (or the ``lockstep publish`` command) uses.

    async with Publisher(Settings()) as publisher:
        await publisher.publish(artifact_packaged(...), traceparent=os.environ.get("TRACEPARENT"))

Events are checked before they leave: a record over the size limit is refused here, with the
reason, rather than dead-lettered later.
"""

from __future__ import annotations

from types import TracebackType

from events import CDEvent, InvalidEvent, KafkaRecord, encode, refuse_unstorable
from shared.bus.producer import ReliableProducer
from shared.settings import Settings


class Publisher:
    def __init__(self, settings: Settings, *, client_id: str = "lockstep-publisher") -> None:
        self._settings = settings
        self._producer = ReliableProducer(settings, client_id=client_id)

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    def record_for(
        self, event: CDEvent, *, traceparent: str | None = None, tracestate: str | None = None
    ) -> KafkaRecord:
        trace = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
        record = encode(event, topic=self._settings.topic(event.TOPIC), trace_headers=trace)
        refuse_unstorable(record)
        size = len(record.value or b"")
        if size > self._settings.max_event_bytes:
            raise InvalidEvent(
                f"{event.context.type} is {size} bytes, over the limit of "
                f"{self._settings.max_event_bytes} (LOCKSTEP_MAX_EVENT_BYTES); send large "
                "reports by URI",
                field="value",
            )
        return record

    async def publish(
        self, event: CDEvent, *, traceparent: str | None = None, tracestate: str | None = None
    ) -> KafkaRecord:
        """Send one event and wait until Kafka has it (acks=all); returns the record sent."""
        record = self.record_for(event, traceparent=traceparent, tracestate=tracestate)
        await self._producer.send_all([record])
        return record

    async def publish_many(self, events: list[CDEvent]) -> None:
        await self._producer.send_all([self.record_for(e) for e in events])

    async def send_raw(self, records: list[KafkaRecord]) -> None:
        """Send records exactly as given (tests and tools that replay or forge records)."""
        await self._producer.send_all(records)
