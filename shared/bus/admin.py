"""Topic set-up: create the namespace's topics that are missing, and their ACLs (both
idempotent, as admin); remove both, and the namespace's consumer groups, for a test's
namespace."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from events import topics
from shared.bus.access import ADMIN, create_acls, delete_acls, extra_users, load_access
from shared.bus.access import namespace_acls as acls_of
from shared.bus.kafka_client import kafka_admin, kafka_consumer
from shared.settings import KAFKA_CREDENTIALS_FILE, Settings


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics (docs/architecture.md, "Topics") under the settings' namespace and
    the ACLs infra/access.toml gives on them, and wait until each of their partitions has a
    leader; returns the topics created. Runs as admin."""
    settings = settings.as_principal(ADMIN)
    access = load_access(settings.access_file) if _secured(settings) else None
    admin = kafka_admin(settings, client_id="lockstep-admin")
    await admin.start()
    try:
        if access is not None:  # before the topics: no moment in which they exist unguarded
            extras = extra_users(settings.credentials_dir / KAFKA_CREDENTIALS_FILE)
            await create_acls(admin, acls_of(access, settings.namespace, extras))
        existing = set(await admin.list_topics())
        cluster = await admin.describe_cluster()
        replication = max(1, min(3, len(cluster.get("brokers", [])) or 1))
        wanted = [
            NewTopic(
                name=settings.topic(t),
                num_partitions=settings.topic_partitions,
                replication_factor=replication,
                topic_configs={"max.message.bytes": str(topics.DLQ_MAX_MESSAGE_BYTES)}
                if t == topics.DLQ
                else {},
            )
            for t in topics.ALL
            if settings.topic(t) not in existing
        ]
        if wanted:
            await admin.create_topics(wanted)
    finally:
        await admin.close()
    if wanted:  # ready when every partition has a leader that answers for its offsets
        created = await partitions_of(settings, [t.name for t in wanted], timeout_s=30.0)
        await _until_offsets_answer(settings, created, timeout_s=30.0)
    return [t.name for t in wanted]


async def _until_offsets_answer(
    settings: Settings, partitions: list[TopicPartition], timeout_s: float
) -> None:
    """A new partition's leader may still refuse offset requests (NotLeaderForPartition) a
    moment after the metadata names it; a consumer started then can be left without a
    position. Ask until every partition answers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    consumer = kafka_consumer(
        settings, client_id="lockstep-admin", enable_auto_commit=False, request_timeout_ms=5000
    )
    await consumer.start()
    try:
        while True:
            try:
                await consumer.beginning_offsets(partitions)
                await consumer.end_offsets(partitions)
                return
            except KafkaError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def delete_namespace_topics(settings: Settings) -> None:
    """Remove every topic of the namespace and their ACLs (test clean-up; never the default
    namespace). Runs as admin."""
    if settings.namespace == "lockstep":
        raise ValueError("refusing to delete the default namespace's topics")
    settings = settings.as_principal(ADMIN)
    admin = kafka_admin(settings, client_id="lockstep-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in settings.all_topics() if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
        if _secured(settings):
            access = load_access(settings.access_file)
            await delete_acls(admin, settings.namespace, access, list(topics.ALL))
    finally:
        await admin.close()


GROUP_NOT_EMPTY = 68  # Kafka's NON_EMPTY_GROUP
GROUP_EMPTIES_S = 15.0  # above a consumer's default session timeout (10 s)


async def delete_namespace_groups(settings: Settings) -> list[str]:
    """Remove the namespace's consumer groups (``<namespace>.<service>``: their committed
    offsets), once they have no members left (a member of a process that died is waited
    for until its session times out; test clean-up; never the default namespace); the
    groups removed. Runs as admin."""
    if settings.namespace == "lockstep":
        raise ValueError("refusing to delete the default namespace's consumer groups")
    settings = settings.as_principal(ADMIN)
    admin = kafka_admin(settings, client_id="lockstep-admin")
    await admin.start()
    try:
        prefix = f"{settings.namespace}."
        groups = sorted(
            g[0] for g in await admin.list_consumer_groups() if str(g[0]).startswith(prefix)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GROUP_EMPTIES_S
        for group in groups:
            while True:
                node = await admin.find_coordinator(group)
                answer = await admin._send_request(DeleteGroupsRequest([group]), node)
                codes = [code for _, code in answer.results if code]
                if codes == [GROUP_NOT_EMPTY] and loop.time() < deadline:
                    await asyncio.sleep(0.5)  # a member of a killed process, not yet timed out
                    continue
                if codes:
                    raise for_code(codes[0])(f"could not delete consumer group {group}")
                break
        return groups
    finally:
        await admin.close()


async def partitions_of(
    settings: Settings, names: list[str], timeout_s: float = 15.0
) -> list[TopicPartition]:
    """Every partition of ``names``, waiting for topics created a moment ago to appear and
    for each of their partitions to have a leader (a consumer that seeks on a partition with
    none yet can be left without a position)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    admin = kafka_admin(settings, client_id="lockstep-admin")
    await admin.start()
    try:
        while True:
            described = await admin.describe_topics(names)
            found = {
                d["topic"]: [p["partition"] for p in d.get("partitions", [])]
                for d in described
                if d.get("error_code", 0) == 0
                and all(
                    p.get("leader", -1) >= 0 and not p.get("error_code")
                    for p in d.get("partitions", [])
                )
            }
            missing = [n for n in names if not found.get(n)]
            if not missing:
                return [TopicPartition(n, p) for n in names for p in sorted(found[n])]
            if loop.time() > deadline:
                raise RuntimeError(
                    f"topics {', '.join(missing)} do not exist (or have partitions without a "
                    "leader); run `lockstep topics ensure`"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def _secured(settings: Settings) -> bool:
    """A broker with an authorizer (PLAINTEXT: the security-off set-up, which has none)."""
    return settings.kafka_security_protocol != "PLAINTEXT"
