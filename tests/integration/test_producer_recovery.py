"""Producers recover by themselves from a Kafka restart (issue 10).

One long-lived Publisher (as a CI system keeps) publishes steadily while Kafka is restarted;
it is never re-created. The artifacts service answers each build through its outbox relay,
whose producer lives across the restart too. Every publish the caller was told succeeded is on
the topic, and every build is announced once; a record may be on a topic twice only as the
documented resend (a fresh producer resending what the old one may have written, which
consumers skip by CloudEvents id), and the counts are printed.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from events import ArtifactPackaged, ArtifactPublished
from shared.bus.producer import ReliableProducer
from shared.bus.publisher import Publisher, PublishError
from tests.integration.conftest import Namespace, NamespaceFactory, unique_service
from tests.integration.test_bus import packaged, registered, restart, rows

pytestmark = pytest.mark.integration

# Only a wedged producer misses these; a restart here takes seconds to tens of seconds.
RECOVERED_WITHIN_S = 180.0


class Stream:
    """What the caller of a long-lived publisher saw."""

    def __init__(self) -> None:
        self.acknowledged: list[str] = []  # event ids, as publish() returned
        self.failed: Counter[str] = Counter()  # publish() raised: the caller publishes it again
        self.errors: list[str] = []


async def publish_steadily(
    publisher: Publisher, events: list[ArtifactPackaged], stream: Stream, every_s: float
) -> None:
    for event in events:
        while True:
            try:
                await publisher.publish(event)
            except PublishError as exc:  # bounded: publish_timeout_s; then the caller retries
                assert not exc.refused, exc  # these events are fine: Kafka has no reason to
                stream.failed[event.id] += 1
                stream.errors.append(str(exc))
                continue
            stream.acknowledged.append(event.id)
            break
        await asyncio.sleep(every_s)


def announced(ns: Namespace, services: list[str]) -> list[tuple[str, str]]:
    return [(s, v) for s in services for v in registered(ns, s)]


def copies(ns: Namespace, logical_topic: str, ce_type: str) -> Counter[str]:
    """CloudEvents id -> how many records with it are on the topic."""
    topic = ns.topic(logical_topic)
    return Counter(
        r.header("ce_id") or ""
        for r in ns.log.records
        if r.topic == topic and r.header("ce_type") == ce_type
    )


@pytest.mark.timeout(600)
async def test_a_long_lived_publisher_and_a_relay_ride_out_a_kafka_restart(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    # Several services, so that the records spread over the partitions (keyed by service).
    services = [unique_service() for _ in range(6)]
    versions = [f"4.0.{i}" for i in range(50)]
    events = [packaged(s, v) for v in versions for s in services]
    stream = Stream()
    async with (
        ns.service() as artifacts,
        Publisher(ns.settings, client_id="ci-long-lived", publish_timeout_s=30) as publisher,
    ):
        publishing = asyncio.create_task(publish_steadily(publisher, events, stream, 0.03))

        def some_acknowledged() -> bool:
            """some publishes acknowledged and announced before the restart"""
            return len(stream.acknowledged) >= 30 and len(announced(ns, services)) >= 10

        await ns.log.wait_for(some_acknowledged, 60)
        before = len(stream.acknowledged)
        await asyncio.to_thread(restart, "kafka")  # while events keep coming
        restarted_at = len(stream.acknowledged)

        # Publishing goes on by itself, with the same publisher and the same relay.
        try:
            await asyncio.wait_for(publishing, RECOVERED_WITHIN_S)
        except TimeoutError:
            pytest.fail(
                f"the publisher did not recover: {len(stream.acknowledged)} of {len(events)} "
                f"acknowledged, {restarted_at} of them before Kafka was back; last errors: "
                f"{stream.errors[-3:]}"
            )
        assert len(stream.acknowledged) == len(events) > restarted_at

        def all_announced() -> bool:
            """every build announced by the relay after the restart"""
            return all(set(versions) <= set(registered(ns, s)) for s in services)

        await ns.log.wait_for(all_announced, RECOVERED_WITHIN_S)
        relay_producer = artifacts._producer
        assert isinstance(relay_producer, ReliableProducer)
        relay_resets = relay_producer.resets
        publisher_resets = publisher._producer.resets

    # Nothing the caller was told is on the topic is missing from it.
    def all_read_back() -> bool:
        """every acknowledged publish read back from the topic"""
        return set(stream.acknowledged) <= set(copies(ns, "artifacts", ArtifactPackaged.TYPE))

    await ns.log.wait_for(all_read_back, 60)
    on_topic = copies(ns, "artifacts", ArtifactPackaged.TYPE)
    assert set(on_topic) == {e.id for e in events}
    published_duplicates = sum(n - 1 for n in on_topic.values())
    if publisher_resets == 0 and not stream.failed:
        assert published_duplicates == 0  # no resend, so no copy

    # Every build handled once and announced once (its id may be on the topic twice if the
    # relay resent it; the announcement is still one event).
    for s in services:
        assert registered(ns, s) == dict.fromkeys(versions, 1)
        assert await rows(ns, s) == sorted(versions)
    announcements = copies(ns, "artifacts", ArtifactPublished.TYPE)
    relay_duplicates = sum(n - 1 for n in announcements.values())
    if relay_resets == 0:
        assert relay_duplicates == 0

    print(
        f"\nkafka restarted after {before} acknowledged publishes; "
        f"publisher: {publisher_resets} fresh producers, {sum(stream.failed.values())} publishes "
        f"raised and were retried by the caller, {published_duplicates} duplicate records by id; "
        f"relay: {relay_resets} fresh producers, {relay_duplicates} duplicate records by id"
    )
