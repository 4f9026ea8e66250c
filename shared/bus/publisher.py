"""Publishing from outside the mesh: what a CI system (or the ``lockstep publish`` command) uses.

    async with Publisher(Settings()) as publisher:
        await publisher.publish(artifact_packaged(...), traceparent=os.environ.get("TRACEPARENT"))

Events are checked before they leave: a record over the size limit is refused here, with the
reason, rather than dead-lettered later. A decision (``events.signing.SIGNERS``: a policy
update, a person's approval) is signed with the publisher's ``signing_key``; without a key of
a role that may sign it, ``UnsignableDecision`` is raised and nothing is sent.

A long-lived publisher recovers by itself from a Kafka restart, a leader change or a fenced
producer (see ``shared.bus.producer``): ``publish`` returns once the broker has the event
(acks=all), or raises ``PublishError`` after at most ``publish_timeout_s``. An event resent
after such an error may be on the topic twice (the first try may have reached the broker
unacknowledged); consumers skip the second by its CloudEvents id. Publishing an event again
after a ``PublishTimedOut`` is just as safe, for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from events import CDEvent, InvalidEvent, KafkaRecord, refuse_unstorable
from events.signing import SigningKey
from shared.bus.kafka_client import KafkaLoginRefused, WritesRefusedAtOnce
from shared.bus.producer import Fault, ReliableProducer, classify, new_kafka_producer
from shared.bus.signing import signed_record
from shared.bus.transport import KAFKA, Transport
from shared.settings import Settings


class PublishError(Exception):
    """Some records did not reach Kafka. ``refused``: those Kafka will never take (with why);
    ``unconfirmed``: those it did not acknowledge in time (it may or may not have them)."""

    def __init__(
        self,
        message: str,
        *,
        refused: Sequence[tuple[KafkaRecord, BaseException]] = (),
        unconfirmed: Sequence[tuple[KafkaRecord, BaseException]] = (),
    ) -> None:
        super().__init__(message)
        self.reason = message
        self.refused = list(refused)
        self.unconfirmed = list(unconfirmed)

    def __str__(self) -> str:
        return self.reason


class EventRefused(PublishError):
    """Kafka refused a record for good (e.g. too large for the topic): not worth sending again."""


class PublishTimedOut(PublishError, TimeoutError):
    """Kafka did not acknowledge a record within the publish timeout."""


class KafkaUnreachable(PublishError, ConnectionError):
    """Kafka did not answer at all when the publisher started."""


class LoginRefused(PublishError):
    """Kafka refused the publisher's login (or it had no password to give)."""


class Publisher:
    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "lockstep-publisher",
        publish_timeout_s: float | None = None,  # default: settings.publish_timeout_s
        producer: ReliableProducer | None = None,
        signing_key: SigningKey | None = None,
        transport: Transport = KAFKA,
    ) -> None:
        if publish_timeout_s is None:
            publish_timeout_s = settings.publish_timeout_s
        if publish_timeout_s <= 0:
            raise ValueError(f"publish_timeout_s must be above 0, not {publish_timeout_s}")
        self._settings = settings
        self._timeout_s = publish_timeout_s
        self._signing_key = signing_key
        self._producer = producer or ReliableProducer(
            settings,
            client_id=client_id,
            factory=lambda: WritesRefusedAtOnce(
                new_kafka_producer(settings, client_id, transport), settings
            ),
        )

    async def __aenter__(self) -> Publisher:
        # Kafka that does not answer at all is most often a wrong address or Kafka not
        # started: say so now. Once started, the publisher rides out restarts by itself.
        try:
            await self._producer.start()
        except KafkaLoginRefused as exc:  # one line that says what to do
            raise LoginRefused(str(exc)) from exc
        except (KafkaError, OSError) as exc:
            raise KafkaUnreachable(
                f"Kafka at {self._settings.kafka_bootstrap} does not answer ({exc}); start it "
                "(`infra/lockstep-infra up`) or point LOCKSTEP_KAFKA_BOOTSTRAP at it"
            ) from exc
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
        record = signed_record(
            event, topic=self._settings.topic(event.TOPIC), key=self._signing_key,
            trace_headers=trace,
        )  # fmt: skip
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
        """Send one event and wait until Kafka has it (acks=all); returns the record sent.
        Raises ``EventRefused`` or ``PublishTimedOut`` (both ``PublishError``) if it does not
        get there within ``publish_timeout_s``."""
        record = self.record_for(event, traceparent=traceparent, tracestate=tracestate)
        await self._deliver([record])
        return record

    async def publish_many(self, events: list[CDEvent]) -> None:
        """Send every event and wait until Kafka has all of them (else ``PublishError``, which
        lists those that did not get there)."""
        await self._deliver([self.record_for(e) for e in events])

    async def send_raw(self, records: list[KafkaRecord]) -> None:
        """Send records exactly as given (tests and tools that replay or forge records)."""
        await self._deliver(records)

    async def _deliver(self, records: Sequence[KafkaRecord]) -> None:
        results = await self._producer.deliver(records, within_s=self._timeout_s)
        refused: list[tuple[KafkaRecord, BaseException]] = []
        unconfirmed: list[tuple[KafkaRecord, BaseException]] = []
        for record, error in zip(records, results, strict=True):
            if error is None:
                continue
            (refused if classify(error) is Fault.RECORD else unconfirmed).append((record, error))
        if unconfirmed:
            record, error = unconfirmed[0]
            raise PublishTimedOut(
                f"Kafka at {self._settings.kafka_bootstrap} did not acknowledge "
                f"{_what(record, len(unconfirmed), len(records))} within {self._timeout_s:.0f}s "
                f"(last error: {error}). Check that Kafka is running (`infra/lockstep-infra "
                "status`); publishing the same event again is safe (consumers skip it by id).",
                refused=refused,
                unconfirmed=unconfirmed,
            )
        if refused:
            record, error = refused[0]
            hint = (
                f"the record is {_size(record)} bytes, more than the topic {record.topic} takes "
                "(its max.message.bytes); send large reports by URI"
                if isinstance(error, MessageSizeTooLargeError)
                else "sending it again would fail again"
            )
            raise EventRefused(
                f"Kafka refused {_what(record, len(refused), len(records))} for good "
                f"({error}): {hint}",
                refused=refused,
            )


def _what(record: KafkaRecord, count: int, of: int) -> str:
    first = f"{record.header('ce_type') or 'a record'} {record.header('ce_id') or ''}".strip()
    return first if of == 1 else f"{count} of {of} records (the first: {first})"


def _size(record: KafkaRecord) -> int:
    return (
        len(record.value or b"")
        + len(record.key or b"")
        + sum(len(v or b"") for _, v in record.headers)
    )
