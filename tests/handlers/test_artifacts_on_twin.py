"""The artifacts service's handlers on the in-memory twin of the broker: what a build's
``artifact.packaged`` makes it say, in milliseconds rather than a broker's seconds. (How the
twin stands in for Kafka: tests/integration/test_bus_suite.py.)"""

from __future__ import annotations

import hashlib

from events import ArtifactPackaged, ArtifactPublished, ArtifactRejected
from services.artifacts.app import SPEC as ARTIFACTS
from shared.bus.testing import TwinBus


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def packaged(service: str, version: str) -> ArtifactPackaged:
    digest = digest_of(service + version)
    return ArtifactPackaged.build(service=service, version=version, digest=digest, commit="abc")


async def test_a_packaged_build_is_registered_and_announced_once(twin: TwinBus) -> None:
    await twin.start(ARTIFACTS)
    build = packaged("checkout", "1.4.2")
    await twin.publish(build, build)  # a CI system that sent it twice
    await twin.settle()
    [published] = twin.events(ArtifactPublished)
    facts = published.custom_data
    assert (facts.service, facts.version, facts.packaged_event_id) == (
        "checkout",
        "1.4.2",
        build.id,
    )
    assert (facts.digest, facts.commit) == (digest_of("checkout1.4.2"), "abc")
    assert twin.dead_letters() == []


async def test_a_build_with_a_bad_digest_is_rejected_with_the_reason(twin: TwinBus) -> None:
    await twin.start(ARTIFACTS)
    build = packaged("checkout", "1.4.3")
    bad = build.model_copy(
        update={
            "subject": build.subject.model_copy(
                update={"id": "pkg:oci/checkout@sha256:12ab?tag=1.4.3"}
            )
        }
    )
    await twin.publish(bad)
    await twin.settle()
    assert twin.events(ArtifactPublished) == []
    [rejected] = twin.events(ArtifactRejected)
    assert rejected.subject.content.code == "invalid_digest"
    assert "'sha256:12ab' is not 'sha256:' followed by 64 lower-case hex" in (
        rejected.subject.content.reason
    )
