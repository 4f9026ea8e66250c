"""How producers recover (no server): which errors are waited out, which need a fresh producer,
which are the record's own fault; and what is resent, to whom, and what the caller is told.

The Kafka producer is a stand-in that answers as a broker does after a restart or a fencing:
``FakeKafka`` keeps what "the broker" has, and each producer it builds answers every send by
the script of its generation (the first producer, the second, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import (
    CorruptRecordException,
    InvalidProducerEpoch,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordTooLargeError,
    RequestTimedOutError,
    UnknownError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from events import ArtifactPackaged, KafkaRecord
from shared.bus.producer import Fault, NotAcknowledged, ReliableProducer, classify
from shared.bus.publisher import EventRefused, KafkaUnreachable, Publisher, PublishTimedOut
from shared.settings import Settings

ACK = "ack"  # the broker has it and says so
HANG = "hang"  # no answer, ever
WRITTEN_UNACKED = "written, unacknowledged"  # the broker has it; the answer is lost


class Refuse:
    """send() itself raises (refused before the record is queued)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


Answer = str | BaseException | Refuse
Script = Callable[[bytes], Answer]


class FakeProducer:
    def __init__(self, kafka: FakeKafka, generation: int, script: Script) -> None:
        self.kafka = kafka
        self.generation = generation
        self.script = script
        self.started = False
        self.stopped = False
        self.sent: list[bytes] = []
        self.stop_hangs = False
        self.force_closed = False
        self.client = self  # where aiokafka keeps its connections (closed without flushing)

    async def start(self) -> None:
        self.kafka.starting.set()
        await asyncio.sleep(self.kafka.start_s)  # the bootstrap's round trips
        if self.kafka.start_failures:
            self.kafka.start_failures -= 1
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True
        self.kafka.stopping.set()
        if self.stop_hangs:
            await asyncio.Event().wait()  # flushing to a broker that is away

    async def close(self) -> None:
        self.force_closed = True

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        assert self.started and not self.stopped, "sent on a producer that is not running"
        assert value is not None
        answer = self.script(value)
        if isinstance(answer, Refuse):
            raise answer.exc
        self.sent.append(value)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if answer in (ACK, WRITTEN_UNACKED):
            self.kafka.topic.append(value)
        if answer == ACK:
            future.set_result(object())
        elif answer == WRITTEN_UNACKED:
            future.set_exception(RequestTimedOutError())
        elif isinstance(answer, BaseException):
            future.set_exception(answer)
        return future  # HANG: never answered


class FakeKafka:
    def __init__(
        self,
        *scripts: Script,
        start_failures: int = 0,
        stop_hangs: tuple[int, ...] = (),
        start_s: float = 0.0,
    ) -> None:
        self.stop_hangs = stop_hangs
        self.start_s = start_s
        self.starting = asyncio.Event()  # a producer's start has begun
        self.stopping = asyncio.Event()  # a producer's stop has begun
        self.scripts = scripts or (lambda _: ACK,)
        self.producers: list[FakeProducer] = []
        self.topic: list[bytes] = []
        self.start_failures = start_failures

    def factory(self) -> FakeProducer:
        generation = len(self.producers)
        script = self.scripts[min(generation, len(self.scripts) - 1)]
        producer = FakeProducer(self, generation, script)
        producer.stop_hangs = generation in self.stop_hangs
        self.producers.append(producer)
        return producer

    def reliable(self, **kwargs: Any) -> ReliableProducer:
        kwargs = {"stall_s": 5.0, "close_s": 0.2, "backoff_s": (0.001, 0.01), **kwargs}
        return ReliableProducer(Settings(), client_id="test", factory=self.factory, **kwargs)


def records(n: int) -> list[KafkaRecord]:
    return [KafkaRecord(topic="t", key=b"k", value=f"r{i}".encode()) for i in range(n)]


def always(answer: Answer) -> Script:
    return lambda _: answer


def first(n: int, answer: Answer, then: Answer) -> Script:
    """Answers ``answer`` to the first ``n`` sends, then ``then`` to every one after."""
    count = 0

    def script(_: bytes) -> Answer:
        nonlocal count
        count += 1
        return answer if count <= n else then

    return script


def after(n: int, then: Answer) -> Script:
    """Acknowledges the first ``n`` sends, then answers ``then`` to every one after."""
    count = 0

    def script(_: bytes) -> Answer:
        nonlocal count
        count += 1
        return ACK if count <= n else then

    return script


# -- classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError(),
        NodeNotReadyError(),
        NotLeaderForPartitionError(),
        LeaderNotAvailableError(),
        RequestTimedOutError(),
        NotEnoughReplicasError(),
        UnknownTopicOrPartitionError(),  # no metadata yet, as right after a restart
        ConnectionResetError(),
    ],
)
def test_a_broker_or_network_away_for_a_while_is_waited_out_with_the_same_producer(
    error: BaseException,
) -> None:
    assert classify(error) is Fault.RETRY


@pytest.mark.parametrize(
    "error",
    [
        OutOfOrderSequenceNumber(),
        UnknownProducerId(),
        InvalidProducerEpoch(),
        ProducerFenced(),
        KafkaTimeoutError(),
        NotAcknowledged("no answer"),
        UnknownError(),  # what this code does not know: a fresh producer is the safe bet
    ],
)
def test_a_producer_whose_own_state_went_bad_is_replaced(error: BaseException) -> None:
    assert classify(error) is Fault.FRESH_PRODUCER


@pytest.mark.parametrize(
    "error",
    [
        MessageSizeTooLargeError(),
        RecordTooLargeError(),
        InvalidTopicError(),
        CorruptRecordException(),
    ],
)
def test_what_kafka_will_never_take_is_the_records_own_fault(error: BaseException) -> None:
    assert classify(error) is Fault.RECORD


# -- resending ---------------------------------------------------------------------------------


async def test_a_producer_wedged_on_out_of_order_sequence_is_replaced_the_rest_resent() -> None:
    # The first producer gets 3 records through, then fails every send, for ever (#1017).
    kafka = FakeKafka(after(3, OutOfOrderSequenceNumber()), always(ACK))
    producer = kafka.reliable()
    batch = records(10)

    results = await producer.deliver(batch, within_s=30)

    assert results == [None] * 10
    assert len(kafka.producers) == 2 and kafka.producers[0].stopped
    # Acknowledged once is never sent again: the broker has each record exactly once, and the
    # fresh producer resent only what the first did not get through, in order.
    assert sorted(kafka.topic) == sorted(r.value for r in batch if r.value)
    assert kafka.producers[1].sent == [r.value for r in batch[3:]]


@pytest.mark.parametrize(
    "error", [UnknownProducerId(), ProducerFenced(), InvalidProducerEpoch(), KafkaTimeoutError()]
)
async def test_every_error_that_needs_a_fresh_producer_gets_one(error: BaseException) -> None:
    kafka = FakeKafka(always(error), always(ACK))
    results = await kafka.reliable().deliver(records(4), within_s=30)
    assert results == [None] * 4
    assert len(kafka.producers) == 2


async def test_a_retriable_error_is_retried_with_the_same_producer() -> None:
    failures = iter([NotLeaderForPartitionError(), KafkaConnectionError()])
    kafka = FakeKafka(lambda _: next(failures, ACK))
    producer = kafka.reliable()
    assert await producer.deliver(records(3), within_s=30) == [None] * 3
    assert len(kafka.producers) == 1 and producer.resets == 0


async def test_deliveries_that_start_the_producer_at_once_share_one() -> None:
    # Tasks publishing through one Publisher deliver at once: while the first start is still
    # bootstrapping, a second must wait for it, not start a producer nobody will stop.
    kafka = FakeKafka(start_s=0.05)
    producer = kafka.reliable()
    done = await asyncio.gather(*(producer.deliver(records(1), within_s=30) for _ in range(3)))
    assert done == [[None]] * 3
    assert len(kafka.producers) == 1
    await producer.stop()
    assert kafka.producers[0].stopped


async def test_a_stop_while_the_producer_starts_stops_the_producer_started() -> None:
    kafka = FakeKafka(start_s=0.1)
    producer = kafka.reliable()
    starting = asyncio.create_task(producer.start())
    await kafka.starting.wait()
    await producer.stop()  # the start under way is waited for, then what it started stopped
    await starting
    assert [p.stopped for p in kafka.producers] == [True]


async def test_a_producer_started_while_another_delivery_resets_is_not_dropped_unstopped() -> None:
    # Delivery A finds its producer wedged and closes it (slowly: it cannot flush); delivery B,
    # meanwhile, starts a fresh one and uses it. A's reset must not then drop B's producer:
    # dropped, it would run on unstopped, its sockets open for the process's life.
    kafka = FakeKafka(always(HANG), always(ACK), stop_hangs=(0,))
    producer = kafka.reliable(stall_s=0.05, close_s=1.0)

    async def later() -> list[BaseException | None]:
        await kafka.stopping.wait()  # A is closing the wedged producer
        return await producer.deliver(records(1), within_s=30)

    a, b = await asyncio.gather(producer.deliver(records(2), within_s=30), later())
    assert (a, b) == ([None, None], [None])
    await producer.stop()
    assert len(kafka.producers) == 2  # A went on with the producer B started
    assert all(p.stopped for p in kafka.producers)


async def test_a_close_cut_short_by_a_cancellation_still_closes_the_sockets() -> None:
    # A relay's final drain runs under a time limit, and a kill cancels it: a producer whose
    # flush is cancelled half-way is let go of all the same, so its sockets must be closed.
    kafka = FakeKafka(always(ACK), stop_hangs=(0,))
    producer = kafka.reliable(close_s=30.0)
    assert await producer.deliver(records(1), within_s=30) == [None]
    stopping = asyncio.create_task(producer.stop())
    await kafka.stopping.wait()  # inside the flush that does not end
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert kafka.producers[0].force_closed


async def test_a_send_with_no_answer_is_given_up_on_and_resent_with_a_fresh_producer() -> None:
    kafka = FakeKafka(always(HANG), always(ACK))
    producer = kafka.reliable(stall_s=0.5)  # long enough to queue two on a loaded machine
    assert await producer.deliver(records(2), within_s=30) == [None, None]
    assert len(kafka.producers) == 2


async def test_an_old_producer_that_cannot_flush_is_closed_without_it() -> None:
    kafka = FakeKafka(always(HANG), always(ACK), stop_hangs=(0,))
    producer = kafka.reliable(stall_s=0.5, close_s=0.05)
    assert await producer.deliver(records(2), within_s=30) == [None, None]
    assert kafka.producers[0].force_closed  # its sockets closed all the same
    assert not kafka.producers[1].force_closed


async def test_a_resend_may_duplicate_an_unacknowledged_write_and_loses_nothing() -> None:
    # The documented case: the broker wrote r1 but its answer was lost, and the producer then
    # went bad; the fresh producer resends r1 (consumers skip the copy by CloudEvents id).
    answers = iter([ACK, WRITTEN_UNACKED, OutOfOrderSequenceNumber()])
    kafka = FakeKafka(lambda _: next(answers), always(ACK))
    batch = records(3)
    assert await kafka.reliable().deliver(batch, within_s=30) == [None] * 3
    assert sorted(kafka.topic) == [b"r0", b"r1", b"r1", b"r2"]


async def test_a_record_kafka_will_never_take_is_sent_once_and_its_error_returned() -> None:
    def script(value: bytes) -> Answer:
        return MessageSizeTooLargeError() if value == b"r1" else ACK

    kafka = FakeKafka(script)
    results = await kafka.reliable().deliver(records(3), within_s=30)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], MessageSizeTooLargeError)
    assert kafka.producers[0].sent.count(b"r1") == 1


async def test_a_record_refused_before_it_is_queued_is_returned_too() -> None:
    def script(value: bytes) -> Answer:
        return Refuse(RecordTooLargeError("too big")) if value == b"r0" else ACK

    kafka = FakeKafka(script)
    results = await kafka.reliable().deliver(records(2), within_s=30)
    assert isinstance(results[0], RecordTooLargeError) and results[1] is None


async def test_a_broker_that_is_not_up_yet_is_waited_for() -> None:
    kafka = FakeKafka(always(ACK), start_failures=3)
    assert await kafka.reliable().deliver(records(2), within_s=30) == [None, None]
    assert kafka.topic == [b"r0", b"r1"]


async def test_a_broker_away_for_good_ends_in_the_last_error_after_the_deadline() -> None:
    kafka = FakeKafka(always(KafkaConnectionError("Connection refused")))
    results = await kafka.reliable().deliver(records(2), within_s=0.5)
    assert all(isinstance(r, KafkaConnectionError) for r in results)
    assert kafka.topic == []


async def test_a_round_the_deadline_cuts_short_does_not_hide_the_error_met_before_it() -> None:
    # The connection is refused, then the resend gets no answer before the time is up: that
    # last round says only that time ran out, so the caller hears the refusal.
    kafka = FakeKafka(first(2, KafkaConnectionError("Connection refused"), HANG))
    results = await kafka.reliable().deliver(records(2), within_s=0.5)
    assert all(isinstance(r, KafkaConnectionError) for r in results), results
    assert len(kafka.producers[0].sent) == 4  # refused once each, then sent into the silence


async def test_a_broker_that_stops_answering_for_a_whole_stall_is_reported_unacknowledged() -> None:
    # Refused, then silent for a stall's full length: that silence is news, and the caller
    # hears it (the broker may or may not have the records).
    kafka = FakeKafka(first(2, KafkaConnectionError("Connection refused"), HANG))
    results = await kafka.reliable(stall_s=0.05).deliver(records(2), within_s=1.0)
    assert all(isinstance(r, NotAcknowledged) for r in results), results


# -- the publisher: what the caller is told -------------------------------------------------------


def packaged(version: str) -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service="checkout",
        version=version,
        digest="sha256:" + "ab" * 32,
        commit="abc123",
        source="ci",
    )


async def test_publish_returns_once_the_broker_has_the_event_after_the_producer_went_bad() -> None:
    kafka = FakeKafka(after(1, OutOfOrderSequenceNumber()), always(ACK))
    async with Publisher(Settings(), producer=kafka.reliable()) as publisher:
        first = await publisher.publish(packaged("1.0.0"))
        second = await publisher.publish(packaged("1.0.1"))  # the first producer is wedged now
    assert kafka.topic == [first.value, second.value]
    assert all(p.stopped for p in kafka.producers)


async def test_publish_says_why_kafka_refused_an_event_for_good() -> None:
    kafka = FakeKafka(always(MessageSizeTooLargeError()))
    async with Publisher(Settings(), producer=kafka.reliable()) as publisher:
        with pytest.raises(EventRefused) as refused:
            await publisher.publish(packaged("1.0.0"))
    message = str(refused.value)
    assert "refused" in message and "max.message.bytes" in message and "by URI" in message
    assert len(kafka.producers[0].sent) == 1  # not retried for ever


async def test_publish_gives_up_after_its_timeout_with_what_to_do() -> None:
    kafka = FakeKafka(always(KafkaConnectionError("Connection refused")))
    async with Publisher(Settings(), producer=kafka.reliable(), publish_timeout_s=0.2) as pub:
        with pytest.raises(PublishTimedOut) as timed_out:
            await pub.publish(packaged("1.0.0"))
    message = str(timed_out.value)
    assert "did not acknowledge" in message and "Connection refused" in message
    assert "again is safe" in message
    assert len(timed_out.value.unconfirmed) == 1


async def test_a_publisher_that_cannot_reach_kafka_at_all_says_where_it_looked() -> None:
    kafka = FakeKafka(start_failures=1)
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(KafkaUnreachable, match=r"127\.0\.0\.1:1 does not answer.*lockstep-infra"):
        async with Publisher(settings, producer=kafka.reliable()):
            pass


def test_a_publish_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="publish_timeout_s"):
        Publisher(Settings(), publish_timeout_s=0)


async def test_a_shutdown_ends_the_retries_and_keeps_what_was_not_acknowledged() -> None:
    kafka = FakeKafka(always(KafkaConnectionError("Connection refused")))
    stop = asyncio.Event()
    stop.set()  # shutting down: one round, no more
    results = await kafka.reliable(backoff_s=(10.0, 10.0)).deliver(
        records(2), within_s=300, stop=stop
    )
    assert all(isinstance(r, KafkaConnectionError) for r in results)
    assert len(kafka.producers[0].sent) == 2
