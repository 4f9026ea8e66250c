"""Instances of a service share its work: two in one consumer group split the partitions, and
the rebalances when one joins mid-stream and another leaves mid-stream lose nothing and
double nothing; an instance with a stable name (static membership) keeps its place in the
group across a restart."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from events import ArtifactPackaged, ArtifactPublished
from shared.bus import Publisher
from shared.bus.kafka_client import kafka_admin
from shared.service import RunningService
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SERVICES = [f"svc{i}" for i in range(12)]  # record keys: spread over the partitions


def builds(ns: Namespace, n: int) -> list[ArtifactPackaged]:
    tag = ns.settings.namespace[-6:]
    out = []
    for i in range(n):
        service = f"{SERVICES[i % len(SERVICES)]}-{tag}"
        version = f"1.{i}.0"
        out.append(
            ArtifactPackaged.build(
                service=service, version=version, digest=digest(service + version), commit="c"
            )
        )
    return out


def announced(ns: Namespace) -> dict[str, int]:
    """service@version -> how many distinct artifact.published events announced it."""
    seen: dict[str, set[str]] = {}
    for e in ns.log.events(ArtifactPublished):
        assert isinstance(e, ArtifactPublished)
        seen.setdefault(e.artifact_label(), set()).add(e.id)
    return {label: len(ids) for label, ids in seen.items()}


async def publish_all(ns: Namespace, events: list[ArtifactPackaged], every_s: float) -> None:
    async with Publisher(ns.settings) as publisher:
        for event in events:
            await publisher.publish(event)
            await asyncio.sleep(every_s)


async def test_two_instances_split_the_work_and_a_join_and_a_leave_mid_stream_lose_nothing(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace(topic_partitions=6)
    events = builds(ns, 300)
    labels = [e.artifact_label() for e in events]
    first_stack, second_stack = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    async with first_stack, second_stack:
        first: RunningService = await first_stack.enter_async_context(ns.service())
        publishing = asyncio.create_task(publish_all(ns, events, every_s=0.01))
        await ns.log.wait_for(lambda: len(announced(ns)) >= 60, 60)
        second: RunningService = await second_stack.enter_async_context(ns.service())
        assert first.consumer is not None and second.consumer is not None
        await ns.log.wait_for(lambda: len(announced(ns)) >= 150, 60)
        await first_stack.aclose()  # the first leaves while events keep coming
        await publishing
        await ns.log.wait_for(lambda: set(labels) <= set(announced(ns)), 90)
        # each handled a share, and between them every build once
        assert first.consumer.handled > 0 and second.consumer.handled > 0
        assert first.consumer.handled + second.consumer.handled == len(events)

    assert announced(ns) == dict.fromkeys(labels, 1)
    handled = await ns.sql("artifacts", "SELECT count(*) AS n FROM inbox WHERE outcome = 'handled'")
    assert handled[0]["n"] == len(events)
    stored = await ns.sql("artifacts", "SELECT service || '@' || version AS label FROM artifacts")
    assert sorted(r["label"] for r in stored) == sorted(labels)


async def group_members(ns: Namespace, group: str) -> list[str]:
    """The member ids of ``group``'s members now. A static member's id begins with its group
    instance id (Kafka names it ``<group.instance.id>-<uuid>``), a dynamic one's with its
    client id."""
    admin = kafka_admin(ns.settings)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups: groups of (error_code, group_id, state, protocol_type, protocol, members)
    return [member[0] for response in described for g in response.groups for member in g[5]]


async def test_a_named_instance_keeps_its_place_in_the_group_across_a_restart(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace(consumer_instance="host-a")
    group = ns.settings.group_id("artifacts")
    events = builds(ns, 40)
    async with ns.service():
        await publish_all(ns, events[:20], every_s=0)
        await ns.log.wait_for(lambda: len(announced(ns)) >= 20, 60)
    # stopped: a static member stays in the group (its partitions wait for it) until its
    # session times out; a dynamic one would have left at once
    [member] = await group_members(ns, group)
    assert member.startswith(f"{group}.host-a-")
    async with ns.service():  # back within the session timeout: in its own place again
        [again] = await group_members(ns, group)  # (the broker gives it a new member id)
        assert again.startswith(f"{group}.host-a-")
        await publish_all(ns, events[20:], every_s=0)
        await ns.log.wait_for(lambda: len(announced(ns)) >= 40, 60)
    assert announced(ns) == dict.fromkeys((e.artifact_label() for e in events), 1)


async def test_without_a_name_an_instance_leaves_the_group_when_it_stops(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    group = ns.settings.group_id("artifacts")
    async with ns.service():
        [member] = await group_members(ns, group)
        assert member.startswith(f"{group}-consumer-")
    assert await group_members(ns, group) == []
