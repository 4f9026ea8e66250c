"""An idempotent Kafka producer (acks=all) that recovers by itself.

After a broker restart, a leader change or a fencing, aiokafka's idempotent producer can stay
stuck: every send to a partition fails with OutOfOrderSequenceNumber (or UnknownProducerId,
InvalidProducerEpoch) until the process restarts (aio-libs/aiokafka#1017), because a batch that
failed after it was given a sequence number leaves a gap that the producer never closes.
``ReliableProducer.deliver`` sends records until the broker has them, and on such an error
drops the producer and resends what was not acknowledged with a fresh one.

Every error the producer can answer with is put in one of three classes (``classify``):

``Fault.RETRY``
    the broker or the network is away for a while (connection refused, no leader yet, a
    request timeout); the same producer tries again.
``Fault.FRESH_PRODUCER``
    the producer's own state is no longer good (its sequence numbers, its id or epoch, a
    send stalled with no answer); a fresh producer resends.
``Fault.RECORD``
    the record's own fault (too large, an invalid topic): Kafka will never take it, however
    often it is sent, so it is not sent again and the error goes back to the caller.

A resend with a fresh producer may put a record on the topic twice: the old producer may have
written it without the acknowledgement coming back, and the new producer has a new producer id,
so the broker cannot tell. That is accepted by design: every consumer de-duplicates by the
CloudEvents id (its inbox). What the caller was told the broker has is never lost: a record
counts as delivered only on the broker's acknowledgement with acks=all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    IllegalStateError,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownProducerId,
)

from events import KafkaRecord
from events.topics import DLQ_MAX_MESSAGE_BYTES
from shared.bus.transport import KAFKA, Transport
from shared.db import short_reason
from shared.settings import Settings

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_MS = 15000
# A send that the broker has not answered within this is taken as stalled: the producer is
# replaced and the record resent. (aiokafka's idempotent producer never gives up on a batch by
# itself, so without this a send could wait for ever.)
STALL_S = REQUEST_TIMEOUT_MS / 1000 + 5
CLOSE_S = 5.0  # how long an old producer may take to flush and close before it is abandoned
BACKOFF_S = (0.1, 2.0)  # the first wait between two rounds, and the longest


class Fault(enum.Enum):
    RETRY = "retry with the same producer"
    FRESH_PRODUCER = "retry with a fresh producer"
    RECORD = "the record's own fault"


# What Kafka will never accept, however often it is sent. (aiokafka marks a timeout as not
# retriable too, so its ``retriable`` flag alone is no test: a broker that is away must be
# waited for, not given up on.)
RECORD_FAULTS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    InvalidTimestampError,
)


class NotAcknowledged(TimeoutError):
    """The broker did not acknowledge a record in time (it may or may not have it)."""


# What says the producer itself is no longer good.
PRODUCER_FAULTS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    InvalidProducerIdMapping,
    ProducerClosed,
    IllegalStateError,
    KafkaTimeoutError,
    NotAcknowledged,  # a send that stalled with no answer
)


def classify(exc: BaseException) -> Fault:
    """What to do about an error a send ended with."""
    if isinstance(exc, RECORD_FAULTS):
        return Fault.RECORD
    if isinstance(exc, PRODUCER_FAULTS):
        return Fault.FRESH_PRODUCER
    if isinstance(exc, KafkaError) and exc.retriable:
        return Fault.RETRY  # connection, no leader (yet), request timed out, not enough replicas
    if isinstance(exc, OSError | TimeoutError):
        return Fault.RETRY
    # Anything else Kafka says (an error this code does not know): a fresh producer is cheap,
    # and the caller's deadline bounds the tries.
    return Fault.FRESH_PRODUCER


def kafka_is_transient(exc: BaseException) -> bool:
    """Kafka is away or not ready yet (the connection refused, no coordinator yet, a request
    timed out): wait for it. Anything else it says (no authorisation, an unsupported version)
    waiting will not mend."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, OSError | TimeoutError)


class _BootstrapNoise(logging.Filter):
    """aiokafka's own error line for a bootstrap server that refused the connection, which
    the caller's one warning per try already says."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != 'Unable connect to "%s:%s": %s'


_BOOTSTRAP_NOISE = _BootstrapNoise()
_quieting = [0]  # how many are starting a client in such a loop now
_quieting_lock = threading.Lock()  # services may run in several threads' loops (tests do)


@contextlib.contextmanager
def quiet_bootstrap() -> Iterator[None]:
    """While a client is started in a loop that logs each failed try itself (the filter stays
    until the last such loop is done)."""
    logger = logging.getLogger("aiokafka")
    with _quieting_lock:
        _quieting[0] += 1
        logger.addFilter(_BOOTSTRAP_NOISE)  # adding it again adds nothing
    try:
        yield
    finally:
        with _quieting_lock:
            _quieting[0] -= 1
            if not _quieting[0]:
                logger.removeFilter(_BOOTSTRAP_NOISE)


def new_kafka_producer(
    settings: Settings, client_id: str, transport: Transport = KAFKA
) -> AIOKafkaProducer:
    return transport.producer(
        settings,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.producer_linger_ms,
        # Room for a dead letter: any record the broker accepted, plus why it failed.
        max_request_size=DLQ_MAX_MESSAGE_BYTES,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )


class ReliableProducer:
    """One producer at a time, replaced when it goes bad.

    ``factory`` builds the underlying producer (an ``AIOKafkaProducer`` by default; tests pass
    a stand-in with ``start``, ``stop`` and ``send``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str,
        factory: Callable[[], Any] | None = None,
        stall_s: float = STALL_S,
        close_s: float = CLOSE_S,
        backoff_s: tuple[float, float] = BACKOFF_S,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._factory = factory or (lambda: new_kafka_producer(settings, client_id))
        self._stall_s = stall_s
        self._close_s = close_s
        self._backoff_s = backoff_s
        self._producer: Any = None
        self._starting = asyncio.Lock()
        self.resets = 0  # how many times a producer was replaced (for logs and tests)

    async def start(self) -> None:
        # One start at a time: deliveries that begin together (tasks publishing through one
        # Publisher) share the producer the first one starts; a second started beside it
        # would be replaced unstopped, its sockets open for as long as the process lives.
        if self._producer is not None:
            return  # every delivery round asks: the running one needs no lock
        async with self._starting:
            if self._producer is None:
                producer = self._factory()
                try:
                    await producer.start()
                except BaseException:
                    await self._close(producer)  # a producer that failed to start holds sockets
                    raise
                self._producer = producer

    async def stop(self) -> None:
        """Flush and close, within a bounded time (a broker that is away is not waited for:
        what it has not acknowledged was not reported delivered). A start under way is waited
        for (it is bounded), so that what it starts is stopped too, not left running."""
        async with self._starting:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)

    async def reset(self, failed: Any = None) -> None:
        """Drop the producer (it may be wedged); the next send starts a fresh one. With
        ``failed``, only if that is still the producer in use: another delivery may have
        replaced it already, and the fresh one it started is not to be dropped."""
        if failed is not None and self._producer is not failed:
            return
        self.resets += 1
        with contextlib.suppress(Exception):  # a broken producer may fail to close
            await self.stop()  # it lets go of the producer before closing it

    async def deliver(
        self,
        records: Sequence[KafkaRecord],
        *,
        within_s: float,
        stop: asyncio.Event | None = None,
    ) -> list[BaseException | None]:
        """Send every record until the broker has acknowledged it (acks=all), for at most
        ``within_s`` seconds. Returns, per record: None if the broker has it; the error if it
        is the record's own fault (``Fault.RECORD``: sent once, not again); else, for a record
        still not acknowledged when the time ran out, the last error it met (the broker may or
        may not have it).

        Errors are handled as ``classify`` says: waited out with the same producer, or with a
        fresh one to which whatever was not acknowledged is resent (in order), with a bounded
        backoff between rounds. A resend may duplicate a record on the topic (see the module's
        docstring); consumers skip it by CloudEvents id.

        Once ``stop`` is set, no further round is begun (one in flight is still waited for):
        a service that is shutting down keeps what was not acknowledged for its next start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        results: list[BaseException | None] = [
            NotAcknowledged(f"not acknowledged within {within_s:.0f}s") for _ in records
        ]
        pending = list(range(len(records)))
        backoff = self._backoff_s[0]
        rounds = 0
        while pending and (left := deadline - loop.time()) > 0:
            if rounds and stop is not None and stop.is_set():
                break
            rounds += 1
            try:
                with quiet_bootstrap():
                    await _unless_stopped(self.start(), left, stop)
            except (KafkaError, OSError, TimeoutError) as exc:
                wait_s = min(backoff, max(0.0, deadline - loop.time()))
                if stop is not None and stop.is_set():
                    log.info("%s: not started: shutting down (%r)", self._client_id, exc)
                else:
                    how = "not reachable" if kafka_is_transient(exc) else "refused us"
                    log.warning(
                        "%s: Kafka at %s %s (%s); trying again in %.1fs",
                        self._client_id, self._settings.kafka_bootstrap, how, short_reason(exc),
                        wait_s,
                    )  # fmt: skip
                for i in pending:
                    if not (_ran_out(exc, True) and _met(results[i])):
                        results[i] = exc
                await _sleep(wait_s, stop)
                backoff = min(backoff * 2, self._backoff_s[1])
                continue
            wait_s = min(self._stall_s, left)
            used = self._producer
            outcome = await self._send_round([records[i] for i in pending], wait_s=wait_s)
            still: list[int] = []
            fresh_needed = False
            for i, error in zip(pending, outcome, strict=True):
                if not (_ran_out(error, wait_s < self._stall_s) and _met(results[i])):
                    results[i] = error
                if error is None:
                    continue
                fault = classify(error)
                if fault is Fault.RECORD:
                    continue  # the caller hears why; sending it again would fail again
                still.append(i)
                fresh_needed = fresh_needed or fault is Fault.FRESH_PRODUCER
            if not still:
                break
            first = results[still[0]]
            log.warning(
                "producer %s: %d of %d records not acknowledged (%r); %s",
                self._client_id, len(still), len(pending), first,
                "resending with a fresh producer" if fresh_needed else "retrying",
            )  # fmt: skip
            if len(still) < len(pending):
                backoff = self._backoff_s[0]  # progress: the broker is answering
            pending = still
            if fresh_needed:
                await self.reset(used)
            await _sleep(min(backoff, max(0.0, deadline - loop.time())), stop)
            backoff = min(backoff * 2, self._backoff_s[1])
        return results

    async def _send_round(
        self, records: Sequence[KafkaRecord], *, wait_s: float
    ) -> list[BaseException | None]:
        """Hand every record to the producer, then wait (up to ``wait_s``) for each answer.
        A record with no answer by then is ``NotAcknowledged``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        producer = self._producer
        assert producer is not None
        queued: list[asyncio.Future[Any] | BaseException] = []
        for r in records:
            left = deadline - loop.time()
            if left <= 0:
                queued.append(NotAcknowledged(f"not queued within {wait_s:.0f}s"))
                continue
            try:
                # Cancelling send() itself (not its future) keeps the record from being sent.
                queued.append(
                    await asyncio.wait_for(
                        producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers)),
                        left,
                    )
                )
            except TimeoutError:
                queued.append(NotAcknowledged(f"not queued within {wait_s:.0f}s"))
            except KafkaError as exc:  # refused before it was queued (too large, no metadata)
                queued.append(exc)
        futures = [f for f in queued if isinstance(f, asyncio.Future)]
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        outcome: list[BaseException | None] = []
        for f in queued:
            if isinstance(f, BaseException):
                outcome.append(f)
            elif not f.done():
                # Left to the producer: it may still deliver (a duplicate, then) or fail when
                # it is replaced; either way nobody waits for this future any more.
                f.add_done_callback(_forget)
                outcome.append(NotAcknowledged(f"not acknowledged within {wait_s:.0f}s"))
            elif f.cancelled():
                outcome.append(NotAcknowledged("the send was cancelled"))
            else:
                outcome.append(f.exception())
        return outcome

    async def _close(self, producer: Any) -> None:
        """Stop a producer; one that cannot flush in time (a broker away, a wedged sender) is
        closed without flushing, and so is one whose stop is cancelled (a drain's time limit,
        a kill): it is let go of either way, and what is let go of must hold no socket."""
        try:
            await asyncio.wait_for(producer.stop(), self._close_s)
            return
        except TimeoutError:
            log.warning(
                "producer %s did not flush within %.0fs; closed without it",
                self._client_id, self._close_s,
            )  # fmt: skip
        except asyncio.CancelledError:
            # Closed in a task of its own, which a second cancellation does not stop.
            closing = asyncio.ensure_future(self._close_unflushed(producer))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)
            raise
        except Exception as exc:
            log.warning("producer %s failed to stop cleanly: %r", self._client_id, exc)
        await self._close_unflushed(producer)

    async def _close_unflushed(self, producer: Any) -> None:
        """What stop() did not get to. These are aiokafka's internals (0.14): fail what is
        still queued so that nothing waits on it, end the sender task, close the sockets."""
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            with contextlib.suppress(Exception):
                accumulator.fail_all(ProducerClosed())
        for part in (getattr(producer, "_sender", None), getattr(producer, "client", None)):
            if part is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(part.close(), self._close_s)


def _ran_out(error: BaseException | None, cut_short: bool) -> bool:
    """A round cut short by the deadline that got no answer says only that time ran out: it
    does not replace the error the record met before (``deliver`` reports the last one met)."""
    return cut_short and isinstance(error, TimeoutError)


def _met(error: BaseException | None) -> bool:
    """An error the record met (the broker's, the connection's), not our own time limit
    (aiokafka's errors are no ``TimeoutError``; ``NotAcknowledged`` and ``wait_for``'s are)."""
    return error is not None and not isinstance(error, TimeoutError)


def _forget(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so that asyncio does not log it as never retrieved


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await _unless_stopped(asyncio.sleep(seconds), seconds, stop)


async def _unless_stopped(
    work: Awaitable[None], seconds: float, stop: asyncio.Event | None
) -> None:
    """Await ``work`` for at most ``seconds`` (TimeoutError), or until ``stop`` is set (then
    TimeoutError too: the caller gives up on it either way)."""
    if stop is None:
        await asyncio.wait_for(work, seconds)
        return
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise TimeoutError
    task.result()
