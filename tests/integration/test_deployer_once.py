"""A deployer agent killed (SIGKILL) at each step between deploying, reporting and committing,
and started again, on the real Kafka: every promotion is deployed once, reported as one
event, and none is skipped. An unreadable promotion is dead-lettered. The promotion service
keeps one history row per deployment however often it is reported.

Run as ``python -m tests.integration.test_deployer_once NAMESPACE STATE CALLS ENV [KILL]``,
this module is the agent under test (``KILL``: where it kills itself, ``report:N`` …).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from events import (
    KafkaRecord,
    PromotionApproved,
    Reference,
    ServiceDeployed,
    decode,
    encode,
    topics,
)
from events.deployments import DeployedContent, DeployedSubject, DeploymentFacts
from events.kafka import reason_of
from events.signing import sign, with_signature
from services.deployer import AgentConfig, Deployer, DeployerAgent, Deployment, report_id
from services.deployer.journal import Journal
from services.deployer.kafka import ReportProducer
from services.deployer.testing import DeployerHarness
from services.promotion.app import SPEC as PROMOTION
from tests.integration.conftest import Namespace, NamespaceFactory, digest, unique_service
from tests.integration.test_poison_records import RawName, RawSender

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PROMOTIONS = 6


class Recording(Deployer):
    """Writes each deploy call to a file (fsynced), so calls survive the process."""

    def __init__(self, calls: Path, kill_at: str | None) -> None:
        self.calls = calls
        self.kill_at = kill_at

    async def deploy(self, deployment: Deployment) -> None:
        with self.calls.open("a") as f:
            f.write(deployment.promotion_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.kill_at == f"deploy:{len(self.calls.read_text().split())}":
            os.kill(os.getpid(), signal.SIGKILL)  # deployed, deploy has not returned


def _kill_points(kill_at: str | None) -> None:
    """Kill this process at ``kill_at``: before the N-th report is sent (``report:N``, it is
    in the journal), after Kafka acknowledged it (``acked:N``), or before its offset is
    committed (``commit:N``: the first commit after the N-th acknowledgement; the journal
    knows it was reported)."""
    sends = 0
    send, commit = ReportProducer.send, DeployerAgent._commit

    async def sending(self: ReportProducer, record: KafkaRecord) -> None:
        nonlocal sends
        report = record.topic.endswith("." + topics.DEPLOYMENTS)
        sends += report
        if report and kill_at == f"report:{sends}":
            os.kill(os.getpid(), signal.SIGKILL)
        await send(self, record)
        if report and kill_at == f"acked:{sends}":
            os.kill(os.getpid(), signal.SIGKILL)

    async def committing(self: DeployerAgent, *args: Any) -> None:
        if kill_at == f"commit:{sends}":
            os.kill(os.getpid(), signal.SIGKILL)
        await commit(self, *args)

    ReportProducer.send = sending  # type: ignore[method-assign]
    DeployerAgent._commit = committing  # type: ignore[method-assign,assignment]


async def _agent_main(
    namespace: str, state: str, calls: str, env: str, kill_at: str | None
) -> None:
    _kill_points(kill_at)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    config = AgentConfig.from_env(agent=f"once-{env}", state_dir=Path(state))
    assert config.namespace == namespace
    await DeployerAgent(Recording(Path(calls), kill_at), config, environments=[env]).run(stop)


def deployer_login(ns: Namespace) -> dict[str, str]:
    """The environment that logs an agent in as the ``deployer`` principal."""
    login = ns.settings.as_principal("deployer").kafka_login()
    if login is None:
        return {"LOCKSTEP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}
    return {"LOCKSTEP_KAFKA_USER": login[0], "LOCKSTEP_KAFKA_PASSWORD": login[1]}


def start_agent(
    ns: Namespace, state: Path, calls: Path, env: str, kill_at: str | None = None
) -> subprocess.Popen[bytes]:
    args = [ns.settings.namespace, str(state), str(calls), env, *([kill_at] if kill_at else [])]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_deployer_once", *args],
        cwd=REPO, env={**os.environ, "LOCKSTEP_KAFKA_BOOTSTRAP": ns.settings.kafka_bootstrap,
                       "LOCKSTEP_NAMESPACE": ns.settings.namespace,
                       "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir), **deployer_login(ns)},
    )  # fmt: skip


def promotions_for(env: str) -> list[PromotionApproved]:
    service = unique_service()
    return [
        DeployerHarness.promotion(
            service=service, version=f"1.0.{i}", digest=digest(f"{service}{i}"), environment=env
        )
        for i in range(PROMOTIONS)
    ]


def reports(ns: Namespace, pids: set[str]) -> dict[str, list[str]]:
    """promotion id -> the CloudEvents ids of its service.deployed records, one per record."""
    found: dict[str, list[str]] = {}
    for r in ns.log.records:
        if r.topic != ns.topic(topics.DEPLOYMENTS) or r.header("ce_type") != ServiceDeployed.TYPE:
            continue
        event = decode(r).event
        assert isinstance(event, ServiceDeployed)
        if event.custom_data.promotion_id in pids:
            found.setdefault(event.custom_data.promotion_id, []).append(event.id)
    return found


@pytest.fixture(scope="module")
async def once(new_namespace: NamespaceFactory) -> Namespace:
    return await new_namespace()


@pytest.mark.parametrize("kill_at", ["report:2", "acked:3", "commit:4", "deploy:2"])
async def test_an_agent_killed_and_started_again_deploys_each_promotion_once(
    once: Namespace, tmp_path: Path, kill_at: str
) -> None:
    ns, env = once, "env-" + kill_at.replace(":", "-")
    promotions = promotions_for(env)
    pids = [p.subject.content.promotion_id for p in promotions]
    for p in promotions:
        await ns.publish(p, signed_as="promotion")
    state, calls = tmp_path / "state", tmp_path / "calls"

    killed = start_agent(ns, state, calls, env, kill_at)
    assert await asyncio.to_thread(killed.wait, 90) == -signal.SIGKILL, "it never got there"
    again = start_agent(ns, state, calls, env)
    try:

        def all_reported() -> bool:
            """every promotion reported"""
            return set(reports(ns, set(pids))) == set(pids)

        await ns.log.wait_for(all_reported, 90)
    finally:
        again.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(again.wait, 30)
    assert code == 0

    deployed = calls.read_text().split()
    if kill_at == "deploy:2":  # killed inside deploy: not reported, so deployed again
        assert deployed == [*pids[:2], *pids[1:]]
    else:  # each deployed exactly once, in order, none skipped
        assert deployed == pids
    found = reports(ns, set(pids))
    for pid in pids:  # one event per promotion; a re-sent report is that same event
        assert set(found[pid]) == {report_id(pid, "deployed")}, (pid, found[pid])
    repeats = [pid for pid, ids in found.items() if len(ids) > 1]
    assert repeats == ([pids[2]] if kill_at == "acked:3" else [])  # acknowledged, not kept
    config = AgentConfig.from_settings(ns.settings, agent=f"once-{env}", state_dir=state)
    with Journal(config.journal_path) as journal:
        assert journal.pending() == []


@pytest.fixture
async def agent(once: Namespace, tmp_path: Path) -> AsyncIterator[tuple[DeployerAgent, Path]]:
    calls = tmp_path / "calls"
    config = AgentConfig.from_settings(
        once.settings, agent="dlq-" + uuid.uuid4().hex[:6], state_dir=tmp_path
    )
    running = DeployerAgent(Recording(calls, None), config, environments=["dlq-env"])
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        yield running, calls
    finally:
        stop.set()
        await task


async def test_an_unreadable_promotion_is_dead_lettered_and_the_next_one_deployed(
    once: Namespace, agent: tuple[DeployerAgent, Path]
) -> None:
    ns, (running, calls) = once, agent
    good = promotions_for("dlq-env")[0]
    key = good.subject.content.service.encode()
    broken = KafkaRecord(
        topic=ns.topic(topics.PROMOTIONS), key=key, value=b'{"context": {"id": ',
        headers=(("ce_specversion", b"1.0"), ("ce_id", b"x-1"), ("ce_source", b"ci"),
                 ("ce_type", PromotionApproved.TYPE.encode()),
                 ("content-type", b"application/json")),
    )  # fmt: skip
    await ns.send_raw([broken])
    await ns.publish(good, signed_as="promotion")  # same key: after the broken one
    pid = good.subject.content.promotion_id

    def dead_letter() -> list[KafkaRecord]:
        """the unreadable promotion on the DLQ, from this agent"""
        return [
            r for r in ns.log.dead_letters()
            if r.key == key and r.header("lockstep.dlq.group") == running.config.group_id
        ]  # fmt: skip

    [letter] = await ns.log.wait_for(dead_letter, 60)
    assert letter.value == broken.value
    assert letter.header("lockstep.dlq.stage") == "decode"
    assert "not valid JSON" in (letter.header("lockstep.dlq.error") or "")
    await ns.log.wait_for(lambda: pid in reports(ns, {pid}), 60)
    assert calls.read_text().split() == [pid]


async def test_a_promotion_the_kafka_client_cannot_decode_is_dead_lettered_and_the_next_deployed(
    once: Namespace, tmp_path: Path
) -> None:
    """A header name that is not UTF-8 makes aiokafka's getmany raise on every fetch of the
    partition: the agent finds the position, dead-letters it with its own producer (the dead
    letter acknowledged before the offset is committed) and deploys the promotion after it."""
    ns, env, calls = once, "undecodable-env", tmp_path / "calls"
    config = AgentConfig.from_settings(
        ns.settings, agent="undecodable-" + uuid.uuid4().hex[:6], state_dir=tmp_path
    )
    running = DeployerAgent(Recording(calls, None), config, environments=[env])
    good = promotions_for(env)[0]
    record = with_signature(
        encode(good, topic=ns.topic(topics.PROMOTIONS)), sign(good, ns.signing_key("promotion"))
    )
    pid = good.subject.content.promotion_id
    headers = [*record.headers, (RawName(b"\xff\xfeX"), b"v")]
    async with RawSender(ns) as raw:
        partition = 0
        offset = await raw.send_unencodable(
            ns.topic(topics.PROMOTIONS), partition, record.key or b"", record.value or b"",
            headers,
        )  # fmt: skip
        await raw.send(  # the same promotion again, readable, after it on its partition
            ns.topic(topics.PROMOTIONS), partition, record.key, record.value, list(record.headers)
        )

    def dead_letter() -> list[KafkaRecord]:
        """the undecodable promotion on the DLQ, from this agent"""
        return [
            r for r in ns.log.dead_letters()
            if r.header("lockstep.dlq.group") == running.config.group_id
            and (r.header("lockstep.dlq.partition"), r.header("lockstep.dlq.offset"))
            == (str(partition), str(offset))
        ]  # fmt: skip

    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        [letter] = await ns.log.wait_for(dead_letter, 60)
        await ns.log.wait_for(lambda: pid in reports(ns, {pid}), 60)
    finally:
        stop.set()
        await task
    why = reason_of(letter)
    assert (why["topic"], why["partition"], why["stage"]) == (
        ns.topic(topics.PROMOTIONS), str(partition), "decode",
    )  # fmt: skip
    assert "a header name is not UTF-8 text" in why["error"]
    assert letter.key is None and letter.value == b"\xff\xfeX"  # all the client gives of it
    assert calls.read_text().split() == [pid]
    assert running.dead_lettered >= 1
    # the tests' own reader went past it too, and says where it was
    assert (ns.topic(topics.PROMOTIONS), partition, offset) in {
        (u.topic, u.partition, u.offset) for u in ns.log.unreadable
    }


def deployed(service: str, version: str, environment: str, pid: str) -> ServiceDeployed:
    promotion = DeployerHarness.promotion(
        service=service, version=version, digest=digest(service + version), environment=environment
    )
    return ServiceDeployed(
        context=ServiceDeployed.new_context("lockstep/deployer/test"),  # a new id each time
        subject=DeployedSubject(
            id=service,
            content=DeployedContent(
                environment=Reference(id=environment),
                artifact_id=promotion.subject.content.artifact_id,
            ),
        ),
        custom_data=DeploymentFacts(promotion_id=pid, agent="test"),
    )


async def test_promotion_keeps_one_history_row_per_deployment_however_often_reported(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    service = unique_service()
    first, second = (
        deployed(service, "1.0.0", "dev", "prm-a"),
        deployed(service, "2.0.0", "dev", "prm-b"),
    )
    marker = deployed(service, "9.0.0", "other", "prm-marker")
    async with ns.service(PROMOTION):
        await ns.publish(first)
        await ns.publish(first)  # the same event twice: the inbox skips it
        await ns.publish(second)
        await ns.publish(deployed(service, "1.0.0", "dev", "prm-a"))  # again, another id
        await ns.publish(marker)  # same key, so taken in after all of them

        async def marked() -> bool:
            rows = await ns.sql("promotion", "SELECT 1 FROM deployment_history "
                                "WHERE promotion_id = 'prm-marker'")  # fmt: skip
            return bool(rows)

        for _ in range(300):
            if await marked():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the promotion service never took in the reports")
        rows = await ns.sql(
            "promotion",
            "SELECT promotion_id, version FROM deployment_history WHERE service = $1 "
            "AND environment = 'dev' ORDER BY id",
            service,
        )
        ledger = await ns.sql(
            "promotion", "SELECT version FROM ledger WHERE service = $1 AND environment = 'dev'",
            service,
        )  # fmt: skip
    assert [(r["promotion_id"], r["version"]) for r in rows] == [
        ("prm-a", "1.0.0"),
        ("prm-b", "2.0.0"),
    ]
    assert [r["version"] for r in ledger] == ["2.0.0"]  # the late repeat moved nothing back


if __name__ == "__main__":
    namespace, state, calls, env, *kill = sys.argv[1:]
    asyncio.run(_agent_main(namespace, state, calls, env, kill[0] if kill else None))
