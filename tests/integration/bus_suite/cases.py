"""The cases of the bus suite. Each is ``async def case(ns: Namespace) -> None`` and must
hold on either broker; ``OVERRIDES`` names the settings a case needs a namespace of its own
for. A case uses its own service names (consumer groups, schemas) and its own keys, so cases
may share a namespace."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from events import ArtifactPackaged, ArtifactPublished, KafkaRecord, encode, topics
from events.kafka import reason_of
from shared.bus import HandlerContext, Router
from shared.bus.handlers import Item
from shared.bus.memory import BROKER_MAX_MESSAGE_BYTES
from shared.bus.publisher import EventRefused, Publisher
from shared.bus.transport import Transport
from shared.db import MigrationSet
from shared.service import ServiceSpec
from tests.integration.conftest import Namespace, digest

Case = Callable[[Namespace], Awaitable[None]]
LEDGER_TABLE = MigrationSet("ledger", "tests.integration.bus_suite")
CASES: dict[str, Case] = {}
OVERRIDES: dict[str, dict[str, Any]] = {}


def case(**overrides: Any) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        name = fn.__name__.removeprefix("case_")
        CASES[name] = fn
        if overrides:
            OVERRIDES[name] = overrides
        return fn

    return register


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the real client's default partitioner picks for ``key`` (aiokafka's,
    not the twin's own code: a twin placing keys otherwise fails the cases that check)."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def uid() -> str:
    return uuid.uuid4().hex[:8]


def packaged(service: str, version: str, commit: str = "abc") -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service=service, version=version, digest=digest(service + version), commit=commit
    )


class Ledger:
    """A service that writes a row per event of its keys it handles (in the handler's
    transaction; other keys' events, of other cases in the namespace, it passes over) and
    counts each call of its handler (outside any transaction: a redelivery would show)."""

    def __init__(self, *, keys: int = 1, poison: str = "", batch: bool = False) -> None:
        self.name = "ledger_" + uid()
        self.keys = ["svc-" + uid() for _ in range(keys)]
        self.key = self.keys[0]
        self.calls: list[tuple[str, str, int, int]] = []  # (key, version, partition, offset)
        self.by: list[str] = []  # which instance made each call
        self.batches: list[int] = []  # how many events each call of a batch handler had
        self._poison, self._batch = poison, batch
        self.spec = self.instance("a")

    def instance(self, tag: str) -> ServiceSpec:
        """The service (one consumer group, one schema) as an instance that says it is
        ``tag`` in ``by``."""
        router = Router()
        ledger, poison = self, self._poison

        async def one(event: ArtifactPackaged, ctx: HandlerContext) -> None:
            assert ctx.record is not None
            ref = event.ref()
            if ref.service not in ledger.keys:
                return
            ledger.calls.append((ref.service, ref.version, ctx.record.partition, ctx.record.offset))
            ledger.by.append(tag)
            await ctx.conn.execute(
                "INSERT INTO ledger (id, service, version) VALUES ($1, $2, $3)",
                event.id, ref.service, ref.version,
            )  # fmt: skip
            if poison and event.subject.content.change.id == poison:
                raise RuntimeError("payments ledger unreachable")

        if self._batch:

            @router.handles_batch(ArtifactPackaged)
            async def many(items: list[Item[ArtifactPackaged]]) -> None:
                ledger.batches.append(len(items))
                for item in items:
                    await one(item.event, item.ctx)
        else:
            router.handles(ArtifactPackaged)(one)
        return ServiceSpec(name=self.name, router=router, migrations=(LEDGER_TABLE,))

    async def rows(self, ns: Namespace) -> list[str]:
        """The versions in the ledger table, in the order they were written."""
        return [
            r["version"] for r in await ns.sql(self.name, "SELECT version FROM ledger ORDER BY n")
        ]

    async def until(self, ns: Namespace, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` rows are in the ledger."""
        for _ in range(int(timeout_s / 0.05)):
            if len(await self.rows(ns)) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name}: {await self.rows(ns)} after {timeout_s}s")


async def end_offset(ns: Namespace, tp: TopicPartition) -> int:
    consumer = ns.transport.consumer(ns.settings, enable_auto_commit=False)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


# -- the cases ---------------------------------------------------------------------------------


@case()
async def case_inbox_skips_a_resent_event_and_refuses_another_under_its_id(ns: Namespace) -> None:
    ledger = Ledger()
    key = ledger.key
    first = packaged(key, "1.0.0")
    other = ArtifactPackaged.build(
        service=key, version="1.0.0", digest=digest("else"), commit="abc"
    ).model_copy(update={"context": first.context})  # same id, other content
    async with ns.service(ledger.spec):
        await ns.publish(first)
        await ns.publish(first)  # a CI system re-sending after a timeout
        await ns.publish(other)
        await ns.publish(packaged(key, "1.0.1"))  # after them, on the same partition
        await ledger.until(ns, 2)

        def conflict() -> list[KafkaRecord]:
            """the dead letter of the conflicting duplicate"""
            return [d for d in ns.log.dead_letters() if d.key == key.encode()]

        [letter] = await ns.log.wait_for(conflict)
    assert [(c[0], c[1]) for c in ledger.calls] == [(key, "1.0.0"), (key, "1.0.1")]
    assert await ledger.rows(ns) == ["1.0.0", "1.0.1"]
    meta = reason_of(letter)
    assert meta["stage"] == "duplicate" and "conflicting duplicate" in meta["error"]
    assert letter.value == encode(other, topic=ns.topic("artifacts")).value
    outcomes = await ns.sql(ledger.name, "SELECT outcome FROM inbox WHERE id = $1", first.id)
    assert [r["outcome"] for r in outcomes] == ["handled"]


@case()
async def case_the_outbox_publishes_what_a_committed_handler_emitted_once(ns: Namespace) -> None:
    """The artifacts service registers a build and emits artifact.published from its
    handler's transaction; with its relay off nothing leaves, and a relay started later
    publishes it exactly once, keyed as Kafka's partitioner places it."""
    from services.artifacts.app import SPEC as ARTIFACTS

    key = "svc-" + uid()
    async with ns.service(ARTIFACTS, relay=False):
        await ns.publish(packaged(key, "1.0.0"))
        for _ in range(400):
            if await ns.sql(
                "artifacts", "SELECT 1 FROM outbox WHERE sent_at IS NULL AND key = $1", key.encode()
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the handler never committed its outbox row")
    await asyncio.sleep(0.5)

    def announced() -> list[KafkaRecord]:
        """artifact.published of the build"""
        return [
            r for r in ns.log.records
            if r.topic == ns.topic("artifacts") and r.key == key.encode()
            and r.header("ce_type") == ArtifactPublished.TYPE
        ]  # fmt: skip

    assert announced() == []  # committed, not published
    async with ns.service(ARTIFACTS, consume=False):
        [record] = await ns.log.wait_for(announced)
        await asyncio.sleep(1.0)  # room for a second, wrong, copy
    assert len(announced()) == 1
    partitions = len(await ns.partitions("artifacts"))
    assert record.partition == partition_for(key.encode(), partitions)
    assert record.header("ce_id") and record.header("content-type") == "application/json"
    unsent = await ns.sql(
        "artifacts", "SELECT id FROM outbox WHERE sent_at IS NULL AND key = $1", key.encode()
    )
    assert unsent == []


@case()
async def case_malformed_records_are_dead_lettered_with_the_reason_and_original_bytes(
    ns: Namespace,
) -> None:
    from services.artifacts.app import SPEC as ARTIFACTS

    key = "svc-" + uid()
    good = encode(packaged(key, "1.0.0"), topic=ns.topic("artifacts"))

    def variant(value: bytes | None = None, drop: str = "", **set_headers: str) -> KafkaRecord:
        hs = [(k, v) for k, v in good.headers if k != drop and k not in set_headers]
        hs += [(k, v.encode()) for k, v in set_headers.items()]
        return KafkaRecord(
            topic=good.topic,
            key=good.key,
            value=value if value is not None else good.value,
            headers=tuple(hs),
        )

    doc = json.loads(good.value or b"")
    del doc["subject"]["content"]["change"]
    poison = {
        "malformed": variant(value=b'{"context": {'),
        "no-ce-type": variant(drop="ce_type"),
        "unknown-type": variant(ce_type="dev.cdevents.spaceship.launched.0.1.0"),
        "schema": variant(value=json.dumps(doc).encode()),
        "oversized": variant(value=b"{" + b" " * (70 * 1024) + b"}"),
        "nul": variant(ce_id="x\x00y"),
        "long-id": variant(
            value=(good.value or b"").replace(doc["context"]["id"].encode(), b"i" * 9000),
            ce_id="i" * 9000,
        ),
    }
    async with ns.service(ARTIFACTS):
        await ns.send_raw(list(poison.values()))
        await ns.publish(packaged(key, "1.0.1"))  # same key, same partition, after the poison

        def dead() -> list[KafkaRecord]:
            """a dead letter for each poison record"""
            found = [d for d in ns.log.dead_letters() if d.key == key.encode()]
            return found if len(found) >= len(poison) else []

        letters = await ns.log.wait_for(dead)
        for _ in range(400):
            if await ns.sql("artifacts", "SELECT 1 FROM artifacts WHERE service = $1", key):
                break
            await asyncio.sleep(0.05)
    assert len(letters) == len(poison)
    why = [reason_of(d)["error"] for d in letters]
    assert "value is not valid JSON" in why[0]
    assert "missing header ce_type" in why[1]
    assert "unknown event type 'dev.cdevents.spaceship.launched.0.1.0'" in why[2]
    assert "subject.content.change: is required but missing" in why[3]
    assert "over the limit of 65536 bytes" in why[4]
    assert "holds a NUL character" in why[5]
    assert "context.id: String should have at most 1024 characters" in why[6]
    offsets = []
    for record, letter in zip(poison.values(), letters, strict=True):
        assert letter.value == record.value  # the original bytes, kept
        meta = reason_of(letter)
        assert meta["topic"] == ns.topic("artifacts") and meta["stage"] == "decode"
        assert meta["group"] == ns.settings.group_id("artifacts")
        assert int(meta["partition"]) == partition_for(
            key.encode(), len(await ns.partitions("artifacts"))
        )
        offsets.append(int(meta["offset"]))
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert dict(letters[2].headers)["ce_type"] == b"dev.cdevents.spaceship.launched.0.1.0"
    registered = await ns.sql("artifacts", "SELECT version FROM artifacts WHERE service = $1", key)
    assert [r["version"] for r in registered] == ["1.0.1"]


@case(handler_max_attempts=3)
async def case_a_failing_handler_is_retried_then_dead_lettered_alone(ns: Namespace) -> None:
    ledger = Ledger(poison="poison")
    key = ledger.key
    bad = packaged(key, "0.0.1", commit="poison")
    async with ns.service(ledger.spec):
        await ns.publish(bad)
        await ns.publish(packaged(key, "0.0.2"))

        def dead() -> list[KafkaRecord]:
            """the dead letter"""
            return [d for d in ns.log.dead_letters() if d.key == key.encode()]

        [letter] = await ns.log.wait_for(dead)
        await ledger.until(ns, 1)
    meta = reason_of(letter)
    assert meta["stage"] == "handle" and meta["attempts"] == "3"
    assert "RuntimeError: payments ledger unreachable" in meta["error"]
    assert letter.value == encode(bad, topic=ns.topic("artifacts")).value
    tries = [c[1] for c in ledger.calls]
    assert tries.count("0.0.1") == 3 and tries.count("0.0.2") == 1
    assert await ledger.rows(ns) == ["0.0.2"]  # the failed tries left nothing behind
    inbox = await ns.sql(ledger.name, "SELECT outcome FROM inbox WHERE id = $1", bad.id)
    assert [r["outcome"] for r in inbox] == ["dead-lettered"]


@case()
async def case_events_of_one_key_are_handled_in_order_on_its_partition(ns: Namespace) -> None:
    ledger = Ledger(keys=4)
    keys = ledger.keys
    versions = [f"1.0.{i}" for i in range(25)]
    # interleaved, through one producer: per key, the order published
    events = [packaged(k, v) for v in versions for k in keys]
    await ns.publish_many(events)
    async with ns.service(ledger.spec):
        await ledger.until(ns, len(events), timeout_s=60)
    partitions = len(await ns.partitions("artifacts"))
    for k in keys:
        mine = [c for c in ledger.calls if c[0] == k]
        assert [c[1] for c in mine] == versions  # each once, in order
        assert {c[2] for c in mine} == {partition_for(k.encode(), partitions)}
        assert [c[3] for c in mine] == sorted(c[3] for c in mine)


@case()
async def case_two_instances_share_the_partitions_and_hand_over_when_one_leaves(
    ns: Namespace,
) -> None:
    """Two instances in one consumer group split the topic's partitions; when one stops,
    the other takes its partitions up from the committed offsets: every event handled once,
    none lost, across both rebalances."""
    ledger = Ledger(keys=12)
    before = [packaged(k, "1.0.0") for k in ledger.keys]
    after = [packaged(k, "1.0.1") for k in ledger.keys]
    partitions = len(await ns.partitions("artifacts"))
    spread = {partition_for(k.encode(), partitions) for k in ledger.keys}
    assert len(spread) > 1  # (12 random keys on 3 partitions: all but certain)
    async with ns.service(ledger.instance("a")) as a:
        async with ns.service(ledger.instance("b")) as b:
            assert a.consumer is not None and b.consumer is not None
            for _ in range(400):  # until the group has dealt the partitions to both
                if ns.memory is not None:
                    shares = [
                        len(c.assignment())
                        for c in ns.memory.members(ns.settings.group_id(ledger.name))
                    ]
                    if len(shares) == 2 and all(shares):
                        break
                elif b.consumer.assigned.is_set():
                    break
                await asyncio.sleep(0.05)
            await ns.publish_many(before)
            await ledger.until(ns, len(before))
            assert set(ledger.by) == {"a", "b"}, ledger.by  # both had a share
            theirs = {
                tag: {c[2] for c, t in zip(ledger.calls, ledger.by, strict=True) if t == tag}
                for tag in "ab"
            }
            assert not theirs["a"] & theirs["b"]  # a partition is one instance's
        await ns.publish_many(after)  # b has left: a has every partition
        await ledger.until(ns, len(before) + len(after))
        await asyncio.sleep(0.5)  # room for a wrong second handling
    assert sorted((c[0], c[1]) for c in ledger.calls) == sorted(
        (e.ref().service, e.ref().version) for e in before + after
    )  # each once
    assert ledger.by[len(before) :] == ["a"] * len(after)
    assert sorted(await ledger.rows(ns)) == ["1.0.0"] * len(before) + ["1.0.1"] * len(after)


class HangsAtCommit:
    """A transport whose consumers die at their first offset commit once ``when()`` holds
    (after the batch's Postgres transaction has committed, before Kafka hears of it): the
    crash window the inbox exists for. ``reached`` is set when one has got there."""

    def __init__(self, inner: Transport, when: Callable[[], bool]) -> None:
        self.inner = inner
        self.when = when
        self.reached = asyncio.Event()

    def consumer(self, settings: Any, *topics_: str, **config: Any) -> Any:
        return _Hanging(self.inner.consumer(settings, *topics_, **config), self)

    def producer(self, settings: Any, **config: Any) -> Any:
        return self.inner.producer(settings, **config)


class _Hanging:
    def __init__(self, consumer: Any, crash: HangsAtCommit) -> None:
        self._consumer = consumer
        self._crash = crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)

    async def commit(self, offsets: Any = None) -> None:
        if not self._crash.when():
            await self._consumer.commit(offsets)
            return
        self._crash.reached.set()
        await asyncio.Event().wait()  # never: the process is killed here


@case()
async def case_a_service_killed_mid_stream_gets_its_uncommitted_records_again(
    ns: Namespace,
) -> None:
    """Killed between its Postgres commit and its Kafka commit, a service's records come
    again to the next instance from the last committed offset; the inbox knows them, so
    nothing is handled twice, and nothing is lost."""
    ledger = Ledger()
    key = ledger.key
    first = [packaged(key, f"1.0.{i}") for i in range(10)]
    await ns.publish_many(first)
    crashing = HangsAtCommit(ns.transport, when=lambda: bool(ledger.calls))
    async with ns.service(ledger.spec, transport=crashing) as running:
        await asyncio.wait_for(crashing.reached.wait(), 30)
        handled = len(await ledger.rows(ns))
        await running.kill()
    assert 0 < handled <= 10 and len(ledger.calls) == handled
    tp = TopicPartition(
        ns.topic("artifacts"), partition_for(key.encode(), len(await ns.partitions("artifacts")))
    )
    # Kafka heard of none of the records handled
    assert (await ns.committed(ledger.name, tp) or 0) <= min(c[3] for c in ledger.calls)
    async with ns.service(ledger.spec):  # the next instance
        last = packaged(key, "1.0.10")
        await ns.publish(last)
        await ledger.until(ns, 11)
        end = await end_offset(ns, tp)
        for _ in range(200):
            if await ns.committed(ledger.name, tp) == end:
                break
            await asyncio.sleep(0.05)
    versions = [f"1.0.{i}" for i in range(11)]
    assert await ledger.rows(ns) == versions
    assert [c[1] for c in ledger.calls] == versions  # none handled twice
    assert await ns.committed(ledger.name, tp) == end  # and now all committed
    ids = [e.id for e in first] + [last.id]
    inbox = await ns.sql(ledger.name, "SELECT outcome FROM inbox WHERE id = ANY($1::text[])", ids)
    assert [r["outcome"] for r in inbox] == ["handled"] * 11


@case(handler_max_attempts=2)
async def case_a_batch_with_one_poison_record_delivers_the_rest(ns: Namespace) -> None:
    ledger = Ledger(poison="poison", batch=True)
    key = ledger.key
    versions = [f"2.0.{i}" for i in range(6)]
    events = [packaged(key, v, commit="poison" if v == "2.0.3" else "abc") for v in versions]
    await ns.publish_many(events)  # before the service starts: one fetch, one batch
    async with ns.service(ledger.spec):

        def dead() -> list[KafkaRecord]:
            """the dead letter"""
            return [d for d in ns.log.dead_letters() if d.key == key.encode()]

        [letter] = await ns.log.wait_for(dead)
        await ledger.until(ns, 5)
        await asyncio.sleep(0.5)  # room for a wrong second dead letter
    assert ledger.batches[0] == len(versions)  # handled as one batch, which failed
    assert len(dead()) == 1 and reason_of(letter)["stage"] == "handle"
    assert letter.value == encode(events[3], topic=ns.topic("artifacts")).value
    assert await ledger.rows(ns) == [v for v in versions if v != "2.0.3"]  # in order
    outcomes = await ns.sql(
        ledger.name, "SELECT outcome, count(*) AS n FROM inbox GROUP BY outcome ORDER BY outcome"
    )
    assert [(r["outcome"], r["n"]) for r in outcomes] == [("dead-lettered", 1), ("handled", 5)]


@case()
async def case_the_record_size_limit_is_the_brokers(ns: Namespace) -> None:
    """A record batch of one at the topic's max.message.bytes is taken, a byte more is
    refused for good; the DLQ takes more (events.topics.DLQ_MAX_MESSAGE_BYTES)."""
    # 61 bytes of batch header, 3 of record length, 3 of attributes and deltas, 1 and the
    # key's own of the key, 3 of value length, 1 of header count
    key = ("big-" + uid()).encode()
    fits = BROKER_MAX_MESSAGE_BYTES - 72 - len(key)
    topic, dlq = ns.topic("artifacts"), ns.topic(topics.DLQ)
    async with Publisher(ns.settings, transport=ns.transport) as publisher:
        await publisher.send_raw([KafkaRecord(topic=topic, key=key, value=b"x" * fits)])
        try:
            await publisher.send_raw([KafkaRecord(topic=topic, key=key, value=b"x" * (fits + 1))])
        except EventRefused as exc:
            assert "MessageSizeTooLarge" in repr(exc.refused[0][1])
        else:
            raise AssertionError("a record over max.message.bytes was taken")
        await publisher.send_raw([KafkaRecord(topic=dlq, key=key, value=b"x" * (fits + 1))])

    def landed() -> list[tuple[str, int]]:
        """the big records"""
        return [(r.topic, len(r.value or b"")) for r in ns.log.records if r.key == key]

    await ns.log.wait_for(lambda: len(landed()) >= 2)
    await asyncio.sleep(0.5)  # room for the refused one, were it taken after all
    assert sorted(landed()) == sorted([(topic, fits), (dlq, fits + 1)])
