"""The artifacts service on the real Kafka and Postgres: registration, immutability, evidence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from events import (
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRef,
    ArtifactRejected,
    BenchmarkFinished,
    CDEvent,
    EvidenceRecorded,
    EvidenceRejected,
    SecurityScanFinished,
    TestSuiteRunFinished,
)
from events.evidence import Findings, Measurement
from services.artifacts import queries
from services.artifacts.api import open_artifacts
from services.artifacts.app import SPEC as ARTIFACTS_SPEC
from shared.bus import Publisher
from shared.clock import ManualClock
from shared.service import RunningService
from tests.integration.conftest import Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration


def published_for(ns: Namespace, label: str) -> list[ArtifactPublished]:
    return [e for e in ns.log.events(ArtifactPublished) if e.artifact_label() == label]  # type: ignore[misc]


def rejected_for(ns: Namespace, service: str) -> list[ArtifactRejected]:
    return [e for e in ns.log.events(ArtifactRejected) if e.partition_key() == service]  # type: ignore[misc]


async def register(ns: Namespace, service: str, version: str, seed: str = "") -> ArtifactPackaged:
    """Publish a build and wait until the registry has announced it."""
    event = ArtifactPackaged.build(
        service=service,
        version=version,
        digest=digest(seed or f"{service}{version}"),
        commit="c0ffee1",
    )
    await ns.publish(event)
    await ns.log.wait_for(lambda: published_for(ns, f"{service}@{version}"))
    return event


async def test_a_build_is_registered_and_announced(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    event = ArtifactPackaged.build(
        service=service,
        version="1.4.2",
        digest=digest("one"),
        commit="3f2a9c1",
        repo="https://git/x",
    )
    await ns.publish(event)

    [published] = await ns.log.wait_for(lambda: published_for(ns, f"{service}@1.4.2"))

    facts = published.custom_data
    assert (facts.service, facts.version, facts.digest) == (service, "1.4.2", digest("one"))
    assert (facts.commit, facts.commit_source, facts.packaged_event_id) == (
        "3f2a9c1",
        "https://git/x",
        event.id,
    )
    assert published.subject.id == ArtifactRef(service, "1.4.2", digest("one")).purl()
    rows = await ns.sql(
        "artifacts", "SELECT digest, commit FROM artifacts WHERE service = $1", service
    )
    assert [tuple(r) for r in rows] == [(digest("one"), "3f2a9c1")]


async def test_same_version_other_digest_is_rejected_and_the_same_digest_is_a_no_op(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    first = await register(ns, service, "1.4.2", seed="a")
    await ns.publish(
        ArtifactPackaged.build(service=service, version="1.4.2", digest=digest("b"), commit="x")
    )
    await ns.publish(
        first.model_copy(update={"context": first.context.model_copy(update={"id": "again"})})
    )
    await register(ns, service, "1.4.3")  # same partition, so everything before it is settled

    [rejected] = rejected_for(ns, service)
    content = rejected.subject.content
    assert content.code == "conflicting_digest"
    assert (content.digest, content.registered_digest) == (digest("b"), digest("a"))
    assert f"{service}@1.4.2 already registered with digest {digest('a')}" in content.reason
    assert "publish a new version (e.g. 1.4.3)" in content.reason
    assert len(published_for(ns, f"{service}@1.4.2")) == 1  # the same digest again: nothing new
    rows = await ns.sql(
        "artifacts",
        "SELECT digest FROM artifacts WHERE service = $1 AND version = '1.4.2'",
        service,
    )
    assert [r["digest"] for r in rows] == [digest("a")]
    rejections = await ns.sql(
        "artifacts", "SELECT code FROM rejections WHERE service = $1", service
    )
    assert [r["code"] for r in rejections] == ["conflicting_digest"]


async def test_a_build_without_a_digest_is_rejected_with_the_reason(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    event = ArtifactPackaged.build(
        service=service, version="2.0.0", digest=digest("x"), commit="abc"
    )
    no_digest = event.model_copy(
        update={"subject": event.subject.model_copy(update={"id": f"pkg:generic/{service}@2.0.0"})}
    )
    await ns.publish(no_digest)

    [rejected] = await ns.log.wait_for(lambda: rejected_for(ns, service))
    assert rejected.subject.content.code == "missing_digest"
    assert "carries no sha256 digest" in rejected.subject.content.reason
    assert rejected.subject.content.rejected_event_id == no_digest.id


async def test_evidence_before_its_artifact_waits_and_is_attached_when_it_arrives(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    ref = ArtifactRef(service, "3.1.0", digest("ooo"))
    tests = TestSuiteRunFinished.build(
        artifact=ref, suite="integration", outcome="success", passed=40
    )
    scan = SecurityScanFinished.build(
        artifact=ArtifactRef(service, "3.1.0"), scanner="trivy", findings=Findings(high=2)
    )
    await ns.publish(tests)
    await ns.publish(scan)

    # Nothing can be recorded before the artifact exists; the evidence is kept as pending.
    rows = await _wait_rows(ns, service, 2)
    assert {r["state"] for r in rows} == {"pending"}
    assert not [e for e in ns.log.events(EvidenceRecorded) if e.partition_key() == service]

    await ns.publish(
        ArtifactPackaged.build(
            service=service, version="3.1.0", digest=ref.digest or "", commit="c"
        )
    )
    bench = BenchmarkFinished.build(
        artifact=ref, benchmark="load", metrics={"p99": Measurement(value=12.5, unit="ms")}
    )
    await ns.publish(bench)

    recorded = await ns.log.wait_for(
        lambda: (
            (r := [e for e in ns.log.events(EvidenceRecorded) if e.partition_key() == service])
            and len(r) == 3
            and r
        )
    )
    by_id = {e.subject.id: e.subject.content for e in recorded}  # type: ignore[attr-defined]
    assert set(by_id) == {tests.id, scan.id, bench.id}
    assert by_id[tests.id].passed and by_id[tests.id].details["passed"] == 40
    assert not by_id[scan.id].passed and by_id[scan.id].details["high"] == 2
    assert by_id[bench.id].details["metrics"]["p99"]["value"] == 12.5
    assert all(c.digest == ref.digest for c in by_id.values())
    rows = await _wait_rows(ns, service, 3)
    assert {r["state"] for r in rows} == {"attached"}

    async with ns.connect("artifacts") as conn:
        view = await queries.show_artifact(conn, service, "3.1.0")
    assert view is not None and view.status == "registered"
    assert sorted(e.kind for e in view.evidence) == ["benchmark", "security-scan", "tests"]


async def _wait_rows(ns: Namespace, service: str, n: int) -> list[asyncpg.Record]:
    for _ in range(200):
        rows = await ns.sql(
            "artifacts", "SELECT id, state FROM evidence WHERE service = $1", service
        )
        if len(rows) >= n and (n < 3 or {r["state"] for r in rows} == {"attached"}):
            return rows
        await asyncio.sleep(0.05)
    pytest.fail(f"evidence rows for {service} never reached {n}")


async def test_evidence_about_another_build_of_the_version_is_rejected(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    await register(ns, service, "1.0.0", seed="real")
    stray = SecurityScanFinished.build(
        artifact=ArtifactRef(service, "1.0.0", digest("impostor")),
        scanner="grype",
        findings=Findings(),
    )
    await ns.publish(stray)

    [rejected] = await ns.log.wait_for(
        lambda: [e for e in ns.log.events(EvidenceRejected) if e.subject.id == stray.id]  # type: ignore[attr-defined]
    )
    assert rejected.subject.content.code == "digest_mismatch"
    assert digest("impostor") in rejected.subject.content.reason
    assert digest("real") in rejected.subject.content.reason


async def test_a_duplicate_delivery_makes_one_row_and_one_event(
    ns: Namespace, artifacts: RunningService
) -> None:
    service = unique_service()
    event = ArtifactPackaged.build(
        service=service, version="5.0.0", digest=digest("dup"), commit="d"
    )
    record = Publisher(ns.settings).record_for(event)
    await ns.send_raw([record, record, record])  # the same record, id and all, three times
    await register(ns, service, "5.0.1")

    assert len(published_for(ns, f"{service}@5.0.0")) == 1
    rows = await ns.sql(
        "artifacts",
        "SELECT count(*) AS n FROM artifacts WHERE service = $1 AND version = '5.0.0'",
        service,
    )
    assert rows[0]["n"] == 1
    inbox = await ns.sql("artifacts", "SELECT count(*) AS n FROM inbox WHERE id = $1", event.id)
    assert inbox[0]["n"] == 1


async def test_evidence_racing_its_artifact_is_never_left_pending(
    ns: Namespace, artifacts: RunningService
) -> None:
    """Builds and their evidence sent at the same moment, on their two topics: the service
    handles those partitions in parallel, and every piece of evidence must end up attached."""
    service = unique_service()
    refs = [ArtifactRef(service, f"9.0.{i}", digest(f"race{i}")) for i in range(60)]
    events: list[CDEvent] = []
    for ref in refs:
        events.append(TestSuiteRunFinished.build(artifact=ref, suite="it", outcome="success"))
        events.append(
            ArtifactPackaged.build(
                service=service, version=ref.version, digest=ref.digest or "", commit="c"
            )
        )
    async with Publisher(ns.settings) as publisher:
        await publisher.publish_many(events)

    def all_recorded() -> bool:
        """evidence recorded for every build"""
        recorded = [e for e in ns.log.events(EvidenceRecorded) if e.partition_key() == service]
        return len(recorded) >= len(refs)

    await ns.log.wait_for(all_recorded, 60)
    recorded = [e.id for e in ns.log.events(EvidenceRecorded) if e.partition_key() == service]
    assert len(recorded) == len(refs)  # once each, no more
    states = await ns.sql(
        "artifacts",
        "SELECT state, count(*) AS n FROM evidence WHERE service = $1 GROUP BY state",
        service,
    )
    assert {r["state"]: r["n"] for r in states} == {"attached": len(refs)}


# --- evidence whose artifact never comes ------------------------------------------------------


@pytest.fixture(scope="module")
async def clocked(
    new_namespace: NamespaceFactory,
) -> AsyncIterator[tuple[Namespace, RunningService, ManualClock]]:
    """The artifacts service on a clock of the test's (turns only when the test calls them),
    evidence waiting at most an hour for its artifact."""
    ns = await new_namespace(periodic_s=3600.0, pending_evidence_ttl_s=3600.0)
    clock = ManualClock(datetime.now(UTC))
    running = RunningService(ARTIFACTS_SPEC, ns.settings, clock=clock)
    await running.setup()
    running.start()
    try:
        assert running.consumer is not None
        await asyncio.wait_for(running.consumer.assigned.wait(), 30)
        yield ns, running, clock
    finally:
        await running.stop()


def expired_for(ns: Namespace, service: str) -> list[EvidenceRejected]:
    return [
        e
        for e in ns.log.events(EvidenceRejected)
        if isinstance(e, EvidenceRejected)
        and e.partition_key() == service
        and e.subject.content.code == "expired"
    ]


async def test_evidence_for_an_artifact_that_never_comes_expires_and_says_so(
    clocked: tuple[Namespace, RunningService, ManualClock],
) -> None:
    ns, running, clock = clocked
    assert running.periodic is not None
    never, late = unique_service(), unique_service()
    waiting = TestSuiteRunFinished.build(
        artifact=ArtifactRef(never, "1.0.0"), suite="it", outcome="success"
    )
    attached = TestSuiteRunFinished.build(
        artifact=ArtifactRef(late, "1.0.0"), suite="it", outcome="success"
    )
    await ns.publish(waiting)
    await ns.publish(attached)

    async def pending(service: str) -> bool:
        rows = await ns.sql("artifacts", "SELECT state FROM evidence WHERE service = $1", service)
        return [r["state"] for r in rows] == ["pending"]

    for service in (never, late):
        for _ in range(300):
            if await pending(service):
                break
            await asyncio.sleep(0.1)
        assert await pending(service), f"{service}'s evidence was not taken in as pending"

    clock.advance(timedelta(minutes=59))
    await running.periodic.turn()  # within the hour: it still waits
    assert await pending(never)
    await register(ns, late, "1.0.0")  # this one's artifact comes: attached, never expired
    await ns.log.wait_for(
        lambda: [e for e in ns.log.events(EvidenceRecorded) if e.partition_key() == late]
    )

    clock.advance(timedelta(minutes=2))
    await running.periodic.turn()

    [expired] = await ns.log.wait_for(lambda: expired_for(ns, never))
    content = expired.subject.content
    assert expired.subject.id == content.source_event_id == waiting.id
    assert content.artifact_id == ArtifactRef(never, "1.0.0").purl()
    assert f"{never}@1.0.0 was not registered within 1h" in content.reason
    assert "LOCKSTEP_PENDING_EVIDENCE_TTL_S" in content.reason

    await running.periodic.turn()  # said once: nothing more to expire
    unsent_or_sent = await ns.sql(
        "artifacts",
        "SELECT count(*) AS n FROM outbox WHERE topic = $1 AND key = $2",
        ns.topic("evidence"),
        never.encode(),
    )
    assert unsent_or_sent[0]["n"] == 1
    assert not expired_for(ns, late)

    async with open_artifacts(ns.settings) as artifacts:
        view = await artifacts.show(never, "1.0.0")
    assert view is not None
    assert view.status == "expired"
    [evidence] = view.evidence
    assert (evidence.state, evidence.reason) == ("expired", content.reason)

    # the artifact coming after all does not revive expired evidence: CI sends it again
    await register(ns, never, "1.0.0")
    rows = await ns.sql("artifacts", "SELECT state FROM evidence WHERE service = $1", never)
    assert [r["state"] for r in rows] == ["expired"]
    assert not [e for e in ns.log.events(EvidenceRecorded) if e.partition_key() == never]
