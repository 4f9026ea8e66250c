"""Integration fixtures: the real Kafka and the real Postgres that `infra/lockstep-infra up`
started (or a Docker engine's, where one exists). Each test namespace gets its own topics,
consumer groups and Postgres schemas, and removes them afterwards, and its own key directory
(under the test run's tmp) with a key of every service role, the platform, admin and alice:
services under test sign with them, and ``ns.publish(event, signed_as=ROLE)`` publishes a
decision signed as the role that makes it (a person's key is the person's the event names).
Services run as their own Postgres roles (the credentials file `up` wrote); what tests look
at and clean up, as the administrator.

``new_memory_namespace`` makes the same kind of namespace on the in-memory twin of the broker
(``shared.bus.memory``) with Postgres still real: the bus suite (tests/integration/bus_suite)
runs on both, and a handler's test may use it for speed (docs/testing.md)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from events import CDEvent, InvalidEvent, KafkaRecord, decode, short_type, topics
from events.kafka import SafeFetcher, Unreadable
from events.signing import KeyStore, NoSigningKey, SigningKey, claimed_person
from services.artifacts.app import SPEC as ARTIFACTS
from shared.bus import Publisher
from shared.bus.admin import (
    delete_namespace_groups,
    delete_namespace_topics,
    ensure_topics,
    partitions_of,
)
from shared.bus.kafka_client import KafkaLoginRefused, kafka_consumer
from shared.bus.memory import MemoryKafka, MemoryTransport
from shared.bus.transport import KAFKA, Transport
from shared.db import drop_namespace_schemas
from shared.service import RunningService, ServiceSpec
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra" / "lockstep-infra"


async def _require_servers(settings: Settings) -> None:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
        await conn.close()
    except Exception as exc:
        pytest.fail(
            f"Postgres at {settings.pg_dsn} does not answer ({exc}); run `{INFRA} up` first"
        )
    consumer = kafka_consumer(settings)  # as admin: the namespace's set-up and clean-up
    try:
        await asyncio.wait_for(consumer.start(), 15)
    except KafkaLoginRefused as exc:
        pytest.fail(str(exc))
    except Exception as exc:
        pytest.fail(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({exc}); run `{INFRA} up` first"
        )
    finally:
        await consumer.stop()


# The role that really makes each decision (events.signing.SIGNERS says which may).
EMITTER_ROLE = {
    "gate.passed": "gates",
    "gate.failed": "gates",
    "promotion.approved": "promotion",
    "promotion.blocked": "promotion",
    "rollback.requested": "incidents",
    "flagchange.requested": "incidents",
    "policy.updated": "platform",
    "approval.updated": "person",
    "hold.released": "person",
}


def emitter_role(event: CDEvent) -> str | None:
    """The role whose service (or person) emits ``event`` in Lockstep; None: no decision."""
    return EMITTER_ROLE.get(short_type(event.context.type))


class Namespace:
    """One isolated Lockstep installation on the shared Kafka and Postgres. Its settings are
    the admin's (set-up, clean-up, and a test's own publishing); the services it runs log in
    as themselves (``RunningService`` uses ``Settings.as_principal``)."""

    def __init__(self, settings: Settings, transport: Transport = KAFKA) -> None:
        self.settings = settings
        self.transport = transport  # the real broker, or a MemoryTransport (the twin)
        self.memory: MemoryKafka | None = (
            transport.kafka if isinstance(transport, MemoryTransport) else None
        )
        self.log = EventLog(settings, transport)
        self.keys = KeyStore(settings.key_dir)

    @property
    def broker(self) -> str:
        """``memory`` or ``kafka``: which broker this namespace is on."""
        return "kafka" if self.memory is None else "memory"

    async def partitions(self, logical: str) -> list[TopicPartition]:
        """The partitions of a topic of the namespace."""
        if self.memory is not None:
            return self.memory.partitions(self.topic(logical))
        return await partitions_of(self.settings, [self.topic(logical)])

    async def committed(self, service: str, tp: TopicPartition) -> int | None:
        """The offset ``service``'s consumer group has committed on ``tp`` (None: none)."""
        consumer = self.transport.consumer(
            self.settings, group_id=self.settings.group_id(service), enable_auto_commit=False
        )
        await consumer.start()
        try:
            found = await consumer.committed(tp)
            return None if found is None else int(found)
        finally:
            await consumer.stop()

    def signing_key(self, role: str, name: str | None = None) -> SigningKey:
        """The namespace's key of ``role`` (a person's: ``name``'s, made on first use)."""
        try:
            return self.keys.signing_key(role, name=name)
        except NoSigningKey:
            if role != "person":
                raise
            self.keys.create("person", name=name)
            return self.keys.signing_key(role, name=name)

    async def publish(
        self, event: CDEvent, traceparent: str | None = None, *, signed_as: str | None = None
    ) -> KafkaRecord:
        """Publish ``event``; a decision signed as ``signed_as`` (the role that really makes
        it; a decision without one is refused, as Lockstep's publisher refuses it)."""
        key = None
        if signed_as is not None:
            name = claimed_person(event) if signed_as == "person" else None
            key = self.signing_key(signed_as, name)
        async with Publisher(self.settings, signing_key=key, transport=self.transport) as p:
            return await p.publish(event, traceparent=traceparent)

    async def publish_many(self, events: list[CDEvent]) -> None:
        """Publish ``events`` (no decisions) in order, through one producer."""
        async with Publisher(self.settings, transport=self.transport) as publisher:
            await publisher.publish_many(events)

    async def send_raw(self, records: list[KafkaRecord]) -> None:
        async with Publisher(self.settings, transport=self.transport) as publisher:
            await publisher.send_raw(records)

    def topic(self, logical: str) -> str:
        return self.settings.topic(logical)

    @asynccontextmanager
    async def service(
        self,
        spec: ServiceSpec = ARTIFACTS,
        *,
        consume: bool = True,
        relay: bool = True,
        transport: Transport | None = None,
    ) -> AsyncIterator[RunningService]:
        """``spec`` running on the namespace's broker (or ``transport``), stopped on leaving
        unless the test killed it (``RunningService.kill``) first."""
        running = RunningService(spec, self.settings, transport=transport or self.transport)
        await running.setup()
        running.start(consume=consume, relay=relay)
        try:
            if consume:
                assert running.consumer is not None
                await asyncio.wait_for(running.consumer.assigned.wait(), 30)
            yield running
        finally:
            if not running.killed:
                await running.stop()

    @asynccontextmanager
    async def connect(self, service: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection that sees ``service``'s schema (tests look; services never do)."""
        conn = await asyncpg.connect(
            self.settings.pg_dsn, server_settings={"search_path": self.settings.db_schema(service)}
        )
        try:
            yield conn
        finally:
            await conn.close()

    async def sql(self, service: str, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connect(service) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows


class EventLog:
    """Everything published in a namespace, read from the beginning by a background consumer
    that no record stops: a position the Kafka client cannot decode is kept in ``unreadable``
    (and the reading goes on past it)."""

    def __init__(self, settings: Settings, transport: Transport = KAFKA) -> None:
        self._settings = settings
        self._transport = transport
        self.records: list[KafkaRecord] = []
        self.unreadable: list[Unreadable] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = self._consumer = self._transport.consumer(
            self._settings,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        try:
            await consumer.start()
            if isinstance(self._transport, MemoryTransport):
                partitions = [
                    tp
                    for t in self._settings.all_topics()
                    for tp in self._transport.kafka.partitions(t)
                ]
            else:
                partitions = await partitions_of(self._settings, self._settings.all_topics())
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(SafeFetcher(consumer, name="EventLog")))

    async def _run(self, fetcher: SafeFetcher) -> None:
        while True:
            batch = await fetcher.getmany(timeout_ms=100)
            if batch:
                async with self._changed:
                    for part in batch.values():
                        self.records.extend(part.records)
                        self.unreadable.extend(part.unreadable)
                    self._changed.notify_all()

    async def stop(self) -> None:
        """Safe at any point (before the task's first step too) and more than once: the
        consumer is closed here, not left to the garbage collector."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def events(self, kind: type[CDEvent] | None = None) -> list[CDEvent]:
        found = []
        for r in self.records:
            if r.topic == self._settings.topic(topics.DLQ):
                continue
            try:
                event = decode(r, max_bytes=10**9).event
            except InvalidEvent:
                continue
            if kind is None or isinstance(event, kind):
                found.append(event)
        return found

    def dead_letters(self) -> list[KafkaRecord]:
        return [r for r in self.records if r.topic == self._settings.topic(topics.DLQ)]

    async def wait_for(self, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until ``check()`` returns something truthy, and return it."""

        async def poll() -> Any:
            async with self._changed:
                while not (result := check()):
                    # woken by new records, and every 0.2 s for checks that look elsewhere
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.2)
                return result

        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            pytest.fail(f"timed out after {timeout}s waiting for {check.__doc__ or check}")


NamespaceFactory = Callable[..., Awaitable[Namespace]]


def _test_settings(tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> Settings:
    name = "it_" + uuid.uuid4().hex[:10]
    defaults: dict[str, Any] = {
        "kafka_principal": "admin",  # set-up, and the tests' own services; real ones: theirs
        "topic_partitions": 3,
        "max_event_bytes": 64 * 1024,
        "retry_backoff_s": 0.05,
        "relay_poll_s": 0.5,
    }
    return Settings(
        namespace=name,
        trace_dir=tmp_path_factory.mktemp(f"traces-{name}"),
        key_dir=tmp_path_factory.mktemp(f"keys-{name}"),
        **(defaults | overrides),
    )


# Every namespace of the session, in the order made (both factories'): a test's own stop
# reading at its end (``_a_tests_namespaces_stop_reading``), and all go at the session's end.
_made: list[Namespace] = []
_CLEAN_UP_AT_ONCE = 8  # namespaces removed concurrently at the session's end


@pytest.fixture(autouse=True)
async def _a_tests_namespaces_stop_reading() -> AsyncIterator[None]:
    """The namespaces a test made (not those its module or session share: those are made
    before it starts) stop reading their topics when it ends; otherwise each one's event log
    goes on polling the broker until the session ends, and the suite slows as they pile up."""
    first = len(_made)
    yield
    for ns in _made[first:]:
        await ns.log.stop()


async def _remove_all(
    made: list[Namespace], remove: Callable[[Namespace], Awaitable[None]]
) -> None:
    room = asyncio.Semaphore(_CLEAN_UP_AT_ONCE)

    async def one(ns: Namespace) -> None:
        async with room:
            await ns.log.stop()
            await remove(ns)

    outcomes = await asyncio.gather(*(one(ns) for ns in made), return_exceptions=True)
    for outcome in outcomes:  # every namespace is tried; then the first that failed says why
        if isinstance(outcome, BaseException):
            raise outcome


@pytest.fixture(scope="session")
async def new_namespace(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[NamespaceFactory]:
    created: list[Namespace] = []

    async def make(**overrides: Any) -> Namespace:
        settings = _test_settings(tmp_path_factory, **overrides)
        if not created:
            await _require_servers(settings)
        await ensure_topics(settings)
        KeyStore(settings.key_dir).init("alice")  # every role's key, and alice's
        ns = Namespace(settings)
        await ns.log.start()
        created.append(ns)
        _made.append(ns)
        return ns

    async def remove(ns: Namespace) -> None:
        await delete_namespace_topics(ns.settings)
        await delete_namespace_groups(ns.settings)
        # as the administrator (pg_dsn), a member of every service's role: whoever owns them
        await drop_namespace_schemas(ns.settings)

    yield make
    await _remove_all(created, remove)


@pytest.fixture(scope="session")
async def new_memory_namespace(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[NamespaceFactory]:
    """As ``new_namespace``, on a broker twin of its own (``shared.bus.memory``): nothing
    reaches Kafka; Postgres is the real one (the namespace's schemas dropped after)."""
    created: list[Namespace] = []

    async def make(**overrides: Any) -> Namespace:
        settings = _test_settings(tmp_path_factory, **overrides)
        transport = MemoryTransport(MemoryKafka(default_partitions=settings.topic_partitions))
        transport.kafka.ensure_topics(settings)
        KeyStore(settings.key_dir).init("alice")
        ns = Namespace(settings, transport)
        await ns.log.start()
        created.append(ns)
        _made.append(ns)
        return ns

    async def remove(ns: Namespace) -> None:
        await drop_namespace_schemas(ns.settings)

    yield make
    await _remove_all(created, remove)


@pytest.fixture(scope="session")
async def ns(new_namespace: NamespaceFactory) -> Namespace:
    """A namespace shared by the tests that only need the artifacts service running."""
    return await new_namespace()


@pytest.fixture(scope="session")
async def artifacts(ns: Namespace) -> AsyncIterator[RunningService]:
    async with ns.service() as running:
        yield running


def unique_service() -> str:
    return "svc-" + uuid.uuid4().hex[:8]


def digest(seed: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
