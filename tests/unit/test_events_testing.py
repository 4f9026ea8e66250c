"""``events.testing`` has a valid sample of every registered event type, and a new type without
one fails here. (That every sample passes its exported JSON Schema and, for CDEvents types, the
official schema is proved in ``test_contract.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from events import (
    EVENT_TYPES,
    ArtifactPackaged,
    CDEvent,
    ServiceDeployed,
    TestSuiteRunFinished,
    decode,
    encode,
    topics,
)
from events import _registry as registry
from events.testing import DIGEST, ENVIRONMENT, SERVICE, overrides, sample, samples, variants


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.TYPE)
def test_every_registered_type_has_a_sample(model: type[CDEvent]) -> None:
    event = sample(model)
    assert type(event) is model
    assert event.context.type == model.TYPE
    assert decode(encode(event, topic=f"lockstep.{model.TOPIC}")).event == event
    assert all(type(v) is model for v in variants(model))
    assert type(variants(model)[0]) is model


def test_samples_cover_the_whole_registry() -> None:
    everything = samples()
    assert {type(e) for e in everything} == set(EVENT_TYPES)
    assert len(everything) >= len(EVENT_TYPES)


@pytest.fixture
def unsampled() -> Iterator[type[CDEvent]]:
    class LockstepTestUnsampled(CDEvent):
        TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-sampletest.happened.0.1.0"
        TOPIC: ClassVar[str] = topics.SIGNALS

    yield LockstepTestUnsampled
    registry._unregister(f"{__name__}.unsampled.<locals>.LockstepTestUnsampled")
    assert LockstepTestUnsampled not in EVENT_TYPES


def test_a_new_type_without_a_sample_fails(unsampled: type[CDEvent]) -> None:
    assert unsampled in EVENT_TYPES
    for attempt in (lambda: sample(unsampled), samples, lambda: variants(unsampled)):
        with pytest.raises(LookupError, match=r"LockstepTestUnsampled .*events/testing\.py"):
            attempt()


def test_samples_are_about_checkout_in_prod_eu_unless_told_otherwise() -> None:
    deployed = sample(ServiceDeployed)
    assert deployed.partition_key() == SERVICE
    assert deployed.subject.content.environment.id == ENVIRONMENT
    assert DIGEST in deployed.subject.content.artifact_id

    billing = sample(ServiceDeployed, service="billing", version="2.0.0", environment="prod-us")
    assert billing.partition_key() == "billing"
    assert billing.artifact_label() == "billing@2.0.0"
    assert billing.subject.content.environment.id == "prod-us"

    packaged = sample(ArtifactPackaged, source="https://ci.example/run/1")
    assert packaged.source == "https://ci.example/run/1"
    failed = sample(TestSuiteRunFinished, outcome="success")
    assert failed.subject.content.outcome == "success"


def test_an_unknown_override_names_the_ones_there_are() -> None:
    assert overrides(ServiceDeployed) == ["service", "version", "digest", "environment", "source"]
    with pytest.raises(TypeError, match=r"takes no colour; it takes: service, version"):
        sample(ServiceDeployed, colour="blue")


def test_every_call_is_a_new_event() -> None:
    first, second = sample(ServiceDeployed), sample(ServiceDeployed)
    assert first.id != second.id
    assert first.subject == second.subject
