"""The bus under bad input and failure: dead letters, crashes, restarts, shutdown.

Nothing is lost and nothing is handled twice: every check ends with the registry's rows and
the events it emitted, counted. What the in-memory twin of the broker must do alike (the
inbox, the outbox after commit, dead letters of malformed records and of failing handlers,
ordering per key, redelivery after a crash, a poisoned batch) is in the bus suite
(tests/integration/bus_suite), run on both brokers; what only the real broker can show
(restarts, a broker out of reach, a signal to a real process) stays here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from events import ArtifactPackaged, ArtifactPublished, ArtifactRejected, KafkaRecord, encode
from services.artifacts.app import SPEC as ARTIFACTS
from shared.bus import HandlerContext, Publisher, Router
from shared.bus.outbox import write
from shared.service import RunningService, ServiceSpec
from tests.integration.conftest import INFRA, Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration


def packaged(service: str, version: str) -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service=service, version=version, digest=digest(service + version), commit="abc"
    )


def registered(ns: Namespace, service: str) -> dict[str, int]:
    """version -> how many distinct artifact.published events announced it."""
    seen: dict[str, set[str]] = {}
    for e in ns.log.events(ArtifactPublished):
        assert isinstance(e, ArtifactPublished)
        if e.custom_data.service == service:
            seen.setdefault(e.custom_data.version, set()).add(e.id)
    return {v: len(ids) for v, ids in seen.items()}


async def wait_registered(
    ns: Namespace, service: str, versions: list[str], timeout: float = 60
) -> None:
    def all_there() -> bool:
        """every version announced"""
        return set(versions) <= set(registered(ns, service))

    await ns.log.wait_for(all_there, timeout)


async def rows(ns: Namespace, service: str) -> list[str]:
    found = await ns.sql(
        "artifacts", "SELECT version FROM artifacts WHERE service = $1 ORDER BY version", service
    )
    return [r["version"] for r in found]


async def test_a_bad_digest_is_rejected_not_dead_lettered(ns: Namespace, artifacts: object) -> None:
    service = unique_service()
    event = packaged(service, "1.0.0")
    bad = event.model_copy(
        update={
            "subject": event.subject.model_copy(
                update={"id": f"pkg:oci/{service}@sha256:12ab?tag=1.0.0"}
            )
        }
    )
    await ns.publish(bad)

    def rejection() -> list[ArtifactRejected]:
        """the rejection"""
        return [e for e in ns.log.events(ArtifactRejected) if e.partition_key() == service]  # type: ignore[misc]

    [rejected] = await ns.log.wait_for(rejection)
    assert rejected.subject.content.code == "invalid_digest"
    assert (
        "'sha256:12ab' is not 'sha256:' followed by 64 lower-case hex"
        in rejected.subject.content.reason
    )


async def test_a_relay_killed_between_publish_and_stamp_sends_again_and_readers_act_once(
    new_namespace: NamespaceFactory,
) -> None:
    """The other crash window: the broker has the record, the outbox row is not stamped yet.
    The record is sent again after the restart; the next service's inbox acts on it once."""
    ns = await new_namespace()
    service = unique_service()
    seen: list[str] = []
    reader = Router()

    @reader.handles(ArtifactPublished)
    async def read(event: ArtifactPublished, ctx: HandlerContext) -> None:
        seen.append(event.id)

    async with ns.service():
        await ns.publish(packaged(service, "1.0.0"))
        await wait_registered(ns, service, ["1.0.0"])
    # What the crash leaves behind: the record is on Kafka, its row still looks unsent.
    await ns.sql("artifacts", "UPDATE outbox SET sent_at = NULL")

    async with ns.service(ServiceSpec(name="reader", router=reader)), ns.service():
        await ns.publish(packaged(service, "1.0.1"))
        await wait_registered(ns, service, ["1.0.1"])

        def both_read() -> bool:
            """the reader has acted on both builds"""
            return len(set(seen)) == 2

        await ns.log.wait_for(both_read)
        await asyncio.sleep(1.0)  # room for a second, wrong, action on the duplicate

    copies = [e.id for e in ns.log.events(ArtifactPublished) if e.partition_key() == service]
    assert len(copies) == 3 and len(set(copies)) == 2  # 1.0.0 is on the topic twice
    assert registered(ns, service) == {"1.0.0": 1, "1.0.1": 1}  # as one event each
    assert sorted(seen) == sorted(set(copies))  # and the reader acted on each once


async def test_a_record_kafka_refuses_for_good_is_set_aside_and_the_rest_go_out(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    service = unique_service()
    async with ns.service(relay=False) as running:
        assert running.pool is not None
        async with running.pool.acquire() as conn:
            small = encode(packaged(service, "1.0.0"), topic=ns.topic("artifacts"))
            huge = KafkaRecord(topic=ns.topic("artifacts"), key=b"x", value=b"x" * 1_500_000)
            later = encode(packaged(service, "1.0.1"), topic=ns.topic("artifacts"))
            await write(conn, [small, huge, later])  # as if a handler had emitted them
    async with ns.service(consume=False):

        def both_small_out() -> list[KafkaRecord]:
            """the two small records published"""
            ids = {dict(small.headers)["ce_id"], dict(later.headers)["ce_id"]}
            return [r for r in ns.log.records if dict(r.headers).get("ce_id") in ids]

        await ns.log.wait_for(lambda: len(both_small_out()) >= 2)
        await asyncio.sleep(1.0)  # would they be sent again and again?
    assert len(both_small_out()) == 2
    aside = await ns.sql("artifacts", "SELECT error FROM outbox WHERE failed_at IS NOT NULL")
    assert len(aside) == 1 and "MessageSizeTooLarge" in aside[0]["error"]
    assert (
        await ns.sql(
            "artifacts", "SELECT id FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        )
        == []
    )


def restart(part: str) -> None:
    """Restart Kafka or Postgres: by `infra/lockstep-infra restart`, or by the command in
    LOCKSTEP_TEST_RESTART_CMD (e.g. `docker compose restart {part}`) where something else
    runs them."""
    template = os.environ.get("LOCKSTEP_TEST_RESTART_CMD")
    command = template.format(part=part) if template else f"bash {INFRA} restart {part}"
    result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, (
        f"`{command}` failed; the restart tests need Kafka and Postgres they may restart "
        f"(started by {INFRA}, or set LOCKSTEP_TEST_RESTART_CMD):\n{result.stdout}\n{result.stderr}"
    )


async def publish_steadily(ns: Namespace, events: list[ArtifactPackaged], every_s: float) -> int:
    """Publish in order, as a CI system would: a failed send is retried (the same event, so a
    send that did reach the broker becomes a duplicate the inbox must absorb). Returns the
    number of retries."""
    retries = 0
    publisher = Publisher(ns.settings)
    await publisher.__aenter__()
    try:
        for event in events:
            while True:
                try:
                    await asyncio.wait_for(publisher.publish(event), 20)
                    break
                except (KafkaError, TimeoutError):
                    retries += 1
                    await asyncio.gather(
                        publisher.__aexit__(None, None, None), return_exceptions=True
                    )
                    await asyncio.sleep(0.5)
                    publisher = Publisher(ns.settings)
                    with contextlib.suppress(KafkaError, OSError):
                        await publisher.__aenter__()
            await asyncio.sleep(every_s)
    finally:
        await asyncio.gather(publisher.__aexit__(None, None, None), return_exceptions=True)
    return retries


@pytest.mark.parametrize("part", ["postgres", "kafka"])
async def test_a_restart_mid_stream_loses_nothing_and_doubles_nothing(
    new_namespace: NamespaceFactory, part: str
) -> None:
    ns = await new_namespace()
    service = unique_service()
    versions = [f"2.0.{i}" for i in range(150)]
    async with ns.service():
        publishing = asyncio.create_task(
            publish_steadily(ns, [packaged(service, v) for v in versions], every_s=0.02)
        )
        await ns.log.wait_for(lambda: len(registered(ns, service)) >= 20)
        await asyncio.to_thread(restart, part)  # while events keep coming
        await publishing
        await wait_registered(ns, service, versions, timeout=120)

    assert registered(ns, service) == dict.fromkeys(versions, 1)
    assert await rows(ns, service) == sorted(versions)
    handled = await ns.sql("artifacts", "SELECT count(*) AS n FROM inbox WHERE outcome = 'handled'")
    assert handled[0]["n"] == len(versions)


async def test_sigterm_drains_commits_and_exits_cleanly(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()
    service = unique_service()
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_TOPIC_PARTITIONS": "3",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "run", "artifacts"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        versions = [f"3.0.{i}" for i in range(300)]
        async with Publisher(ns.settings) as publisher:
            await publisher.publish(packaged(service, versions[0]))
            await wait_registered(ns, service, versions[:1])
            await publisher.publish_many([packaged(service, v) for v in versions[1:]])
        await asyncio.sleep(0.05)  # the signal lands while batches are in hand
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output
    # Drained: whatever the last batch emitted has left the outbox before the process ended.
    assert await ns.sql("artifacts", "SELECT id FROM outbox WHERE sent_at IS NULL") == []
    handled = await ns.sql("artifacts", "SELECT version FROM artifacts WHERE service = $1", service)

    def all_handled_announced() -> bool:
        """every build handled before the signal announced"""
        return {r["version"] for r in handled} <= set(registered(ns, service))

    await ns.log.wait_for(all_handled_announced, 10)

    async with ns.service():  # whatever was not consumed before the signal is consumed now
        await wait_registered(ns, service, versions)
    assert registered(ns, service) == dict.fromkeys(versions, 1)
    assert await rows(ns, service) == sorted(versions)


async def test_the_relay_outlives_a_kafka_it_cannot_reach(new_namespace: NamespaceFactory) -> None:
    ns = await new_namespace()
    cut_off = ns.settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"})  # nothing there
    service = RunningService(ARTIFACTS, cut_off)
    await service.setup()
    try:
        assert service.pool is not None and service.relay is not None
        async with service.pool.acquire() as conn:
            await write(
                conn, [encode(packaged(unique_service(), "1.0.0"), topic=ns.topic("artifacts"))]
            )
        service.start(consume=False)
        await asyncio.sleep(3)  # several failed tries to reach Kafka
        [relay] = service._tasks
        assert not relay.done(), relay
    finally:
        await service.stop()  # raises if the relay had died
    unsent = await ns.sql("artifacts", "SELECT id FROM outbox WHERE sent_at IS NULL")
    assert len(unsent) == 1  # kept for when Kafka is back
