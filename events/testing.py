"""Valid sample events of every event type, for tests: Lockstep's own and yours.

A deployer agent, a CI plugin or any other producer or consumer of Lockstep's events can test
against realistic events without a running Lockstep::

    from events import ServiceDeployed, decode, encode
    from events.testing import sample, samples

    deployed = sample(ServiceDeployed, service="billing", environment="prod-us")
    assert decode(encode(deployed, topic="lockstep.deployments")).event == deployed

    for event in samples():  # every variant of every registered type
        my_consumer.handle(event)

``sample(Model, **overrides)`` builds the default (fullest) sample of ``Model``; the overrides
are keyword arguments of its factory, mostly ``service``, ``version``, ``digest``,
``environment`` and ``source`` (``overrides(Model)`` lists them; an unknown one is a
``TypeError`` that names them). ``variants(Model)`` adds the other shapes of the type
(minimal, without optional parts, other branches). Every call builds new events, with a fresh
id and timestamp. Each sample validates against the type's exported JSON Schema and, for
CDEvents types, against the official CDEvents schema (Lockstep's contract tests check both).

Every registered event type has a sample here; ``sample`` and ``samples`` raise ``LookupError``
for one that has none, so a new event type without a sample fails the tests.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from events._artifact_ref import ArtifactRef
from events._base import CDEvent, Reference
from events._registry import EVENT_TYPES
from events.approvals import (
    ApprovalRefused,
    ApprovalTarget,
    ApprovalUpdated,
    RefusedApprovalContent,
    RefusedApprovalSubject,
)
from events.artifacts import (
    ArtifactFacts,
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRejected,
    PublishedContent,
    PublishedSubject,
    RejectedContent,
    RejectedSubject,
    SbomRef,
)
from events.deployments import (
    DeployedContent,
    DeployedSubject,
    DeploymentFacts,
    DeploymentFailed,
    FailedContent,
    FailedSubject,
    ServiceDeployed,
    ServiceRolledBack,
)
from events.evidence import (
    BenchmarkFinished,
    EvidenceRecorded,
    EvidenceRejected,
    EvidenceRejectedContent,
    EvidenceRejectedSubject,
    Findings,
    Measurement,
    RecordedContent,
    RecordedSubject,
    SecurityScanFinished,
    TestSuiteRunFinished,
)
from events.flags import (
    ChangedContent,
    ChangedSubject,
    ChangeRejectedContent,
    ChangeRejectedSubject,
    FlagChanged,
    FlagChangeRejected,
    FlagChangeRequested,
)
from events.gates import CriterionVerdict, GateDecisionContent, GateFailed, GatePassed, GateSubject
from events.incidents import (
    AcknowledgedContent,
    AcknowledgedSubject,
    IncidentAcknowledged,
    IncidentContent,
    IncidentDetected,
    IncidentFacts,
    IncidentNotified,
    IncidentResolved,
    IncidentSubject,
    NotifiedContent,
    NotifiedSubject,
    RollbackContent,
    RollbackRequested,
    RollbackSubject,
    RunbookStepFinished,
    StepContent,
    StepSubject,
)
from events.policy import PolicyContent, PolicySubject, PolicyUpdated
from events.promotions import (
    ApprovedContent,
    ApprovedSubject,
    BlockedContent,
    BlockedSubject,
    HoldReleased,
    HoldReleasedContent,
    HoldReleasedSubject,
    HoldView,
    PromotionApproved,
    PromotionBlocked,
    promotion_id,
)
from events.security import SignatureRefusal
from events.signals import SignalObserved

__all__ = [
    "COMMIT",
    "DIGEST",
    "ENVIRONMENT",
    "SERVICE",
    "VERSION",
    "overrides",
    "sample",
    "samples",
    "variants",
]

E = TypeVar("E", bound=CDEvent)
Factory = Callable[..., CDEvent]

# What the samples are about, unless overridden: checkout 1.4.2 going to prod-eu.
SERVICE = "checkout"
VERSION = "1.4.2"
DIGEST = "sha256:" + "3f9a0c17" * 8
OTHER_DIGEST = "sha256:" + "0b" * 32
COMMIT = "9c1e2f4a7b3d5e6f8a0b1c2d3e4f5a6b7c8d9e0f"
ENVIRONMENT = "prod-eu"
REPO = "https://github.com/acme/checkout"
SBOM_URI = "https://sbom.acme.example/checkout/1.4.2.spdx.json"
POLICY_SHA256 = "a" * 64
PROMOTION_ID = "prm-0123456789abcdef01234567"
AGENT = "eu-1"
INCIDENT = "inc-0001"
KILL_SWITCH: dict[str, Any] = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "metadata": {"type": "kill-switch", "owner": "payments"},
}

_FACTORIES: dict[type[CDEvent], list[Factory]] = {}


def _sample_of(model: type[CDEvent], *, default: bool = False) -> Callable[[Factory], Factory]:
    """Register a factory of ``model`` samples; the ``default`` one is what ``sample`` builds."""

    def add(factory: Factory) -> Factory:
        factories = _FACTORIES.setdefault(model, [])
        if default:
            factories.insert(0, factory)
        else:
            factories.append(factory)
        return factory

    return add


def _factories(model: type[CDEvent]) -> list[Factory]:
    factories = _FACTORIES.get(model)
    if not factories:
        raise LookupError(
            f"no sample of {model.__name__} ({model.TYPE}); every event type needs one: add a "
            "factory to events/testing.py"
        )
    return factories


def overrides(model: type[CDEvent]) -> list[str]:
    """The keyword arguments ``sample(model, ...)`` takes."""
    return list(inspect.signature(_factories(model)[0]).parameters)


def sample(model: type[E], /, **overrides: Any) -> E:
    """The default sample of ``model``: a valid event, built anew on every call."""
    factory = _factories(model)[0]
    unknown = set(overrides) - set(inspect.signature(factory).parameters)
    if unknown:
        accepted = ", ".join(inspect.signature(factory).parameters) or "none"
        raise TypeError(
            f"sample({model.__name__}) takes no {', '.join(sorted(unknown))}; it takes: {accepted}"
        )
    event = factory(**overrides)
    if type(event) is not model:
        raise TypeError(f"the sample factory of {model.__name__} built a {type(event).__name__}")
    return event


def variants(model: type[E]) -> list[E]:
    """Every sample of ``model``: the default first, then its other shapes."""
    events = [factory() for factory in _factories(model)]
    wrong = [type(e).__name__ for e in events if type(e) is not model]
    if wrong:
        raise TypeError(f"a sample factory of {model.__name__} built {', '.join(wrong)}")
    return events  # type: ignore[return-value]  # checked just above


def samples() -> list[CDEvent]:
    """Every variant of every registered event type, in the registry's order."""
    return [event for model in EVENT_TYPES for event in variants(model)]


def _ref(service: str, version: str, digest: str | None = None) -> ArtifactRef:
    return ArtifactRef(service, version, digest)


# --- artifacts ---------------------------------------------------------------------------------


@_sample_of(ArtifactPackaged, default=True)
def _packaged(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    commit: str = COMMIT, source: str = "https://ci.acme.example/pipelines/checkout/runs/812",
) -> CDEvent:  # fmt: skip
    return ArtifactPackaged.build(
        service=service, version=version, digest=digest, commit=commit, source=source,
        repo=REPO, sbom_uri=SBOM_URI,
    )  # fmt: skip


@_sample_of(ArtifactPackaged)
def _packaged_minimal() -> CDEvent:
    return ArtifactPackaged.build(service=SERVICE, version=VERSION, digest=DIGEST, commit=COMMIT)


@_sample_of(ArtifactPackaged)
def _packaged_with_author() -> CDEvent:
    return ArtifactPackaged.build(
        service=SERVICE, version=VERSION, digest=DIGEST, commit=COMMIT, author="dave"
    )


@_sample_of(ArtifactPublished, default=True)
def _published(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    source: str = "lockstep/artifacts", sbom: bool = True,
) -> CDEvent:  # fmt: skip
    # as services/artifacts builds it
    return ArtifactPublished(
        context=ArtifactPublished.new_context(source),
        subject=PublishedSubject(
            id=_ref(service, version, digest).purl(),
            content=PublishedContent(sbom=SbomRef(uri=SBOM_URI) if sbom else None),
        ),
        custom_data=ArtifactFacts(
            service=service,
            version=version,
            digest=digest,
            commit=COMMIT,
            commit_source=REPO if sbom else None,
            packaged_event_id=str(uuid.uuid4()),
        ),
    )


@_sample_of(ArtifactPublished)
def _published_without_sbom() -> CDEvent:
    return _published(sbom=False)


@_sample_of(ArtifactRejected, default=True)
def _rejected(
    *, service: str = SERVICE, version: str = VERSION, source: str = "lockstep/artifacts"
) -> CDEvent:
    return ArtifactRejected(
        context=ArtifactRejected.new_context(source),
        subject=RejectedSubject(
            id=_ref(service, version).purl(),
            content=RejectedContent(
                code="missing_digest",
                reason="artifact id carries no sha256 digest",
                service=service,
                version=version,
                rejected_event_id=str(uuid.uuid4()),
            ),
        ),
    )


# --- evidence ----------------------------------------------------------------------------------


@_sample_of(TestSuiteRunFinished, default=True)
def _tests(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    outcome: str = "failure", source: str = "https://github.com/acme/checkout/actions",
) -> CDEvent:  # fmt: skip
    return TestSuiteRunFinished.build(
        artifact=_ref(service, version, digest),
        suite="integration",
        outcome=outcome,  # type: ignore[arg-type]  # the model checks it
        environment="ci",
        passed=41,
        failed=1,
        skipped=2,
        run_id="gh-run-1187",
        source=source,
        reason="1 test failed: test_refund_rounding",
    )


@_sample_of(TestSuiteRunFinished)
def _tests_minimal() -> CDEvent:
    return TestSuiteRunFinished.build(
        artifact=_ref(SERVICE, VERSION), suite="smoke", outcome="success"
    )


@_sample_of(SecurityScanFinished, default=True)
def _scan(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    source: str = "lockstep/cli",
) -> CDEvent:  # fmt: skip
    return SecurityScanFinished.build(
        artifact=_ref(service, version, digest),
        scanner="trivy",
        findings=Findings(critical=0, high=1, medium=3, low=7),
        report_uri="https://ci.acme.example/scans/812.json",
        source=source,
    )


@_sample_of(BenchmarkFinished, default=True)
def _benchmark(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    source: str = "lockstep/cli",
) -> CDEvent:  # fmt: skip
    return BenchmarkFinished.build(
        artifact=_ref(service, version, digest),
        benchmark="checkout-load",
        metrics={
            "p99_latency": Measurement(value=212.5, unit="ms"),
            "throughput": Measurement(value=1840, unit="req/s", higher_is_better=True),
        },
        source=source,
    )


@_sample_of(EvidenceRecorded, default=True)
def _recorded(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    source: str = "lockstep/artifacts",
) -> CDEvent:  # fmt: skip
    source_id = str(uuid.uuid4())
    return EvidenceRecorded(
        context=EvidenceRecorded.new_context(source),
        subject=RecordedSubject(
            id=source_id,
            source="https://github.com/acme/checkout/actions",
            content=RecordedContent(
                artifact_id=_ref(service, version, digest).purl(),
                service=service,
                version=version,
                digest=digest,
                kind="tests",
                passed=True,
                details={"outcome": "success", "suite": "integration", "passed": 42},
                source_event_id=source_id,
                source_event_type=TestSuiteRunFinished.TYPE,
            ),
        ),
    )


@_sample_of(EvidenceRejected, default=True)
def _evidence_rejected(
    *, service: str = SERVICE, version: str = VERSION, source: str = "lockstep/artifacts"
) -> CDEvent:
    source_id = str(uuid.uuid4())
    return EvidenceRejected(
        context=EvidenceRejected.new_context(source),
        subject=EvidenceRejectedSubject(
            id=source_id,
            content=EvidenceRejectedContent(
                artifact_id=_ref(service, version, OTHER_DIGEST).purl(),
                code="digest_mismatch",
                reason=f"{service}@{version} is registered with another digest",
                source_event_id=source_id,
            ),
        ),
    )


@_sample_of(EvidenceRejected)
def _evidence_expired(
    *, service: str = SERVICE, version: str = VERSION, source: str = "lockstep/artifacts"
) -> CDEvent:
    source_id = str(uuid.uuid4())
    return EvidenceRejected(
        context=EvidenceRejected.new_context(source),
        subject=EvidenceRejectedSubject(
            id=source_id,
            content=EvidenceRejectedContent(
                artifact_id=_ref(service, version, None).purl(),
                code="expired",
                reason=f"{service}@{version} was not registered within 7d of this evidence",
                source_event_id=source_id,
            ),
        ),
    )


# --- the release model and gates ---------------------------------------------------------------

RELEASE_MODEL: dict[str, Any] = {
    "version": 1,
    "environments": [
        {"name": "staging"},
        {"name": "prod-eu", "after": ["staging"], "region": "eu"},
    ],
    "gates": {"prod-eu": {"criteria": [{"evidence": "tests", "key": True, "weight": 2}]}},
}


@_sample_of(PolicyUpdated, default=True)
def _policy(*, updated_by: str = "platform-team", source: str = "lockstep/cli") -> CDEvent:
    text = json.dumps(RELEASE_MODEL, indent=2) + "\n"  # the file as published (JSON is YAML)
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    return PolicyUpdated(
        context=PolicyUpdated.new_context(source),
        subject=PolicySubject(
            id=sha256,
            content=PolicyContent(
                sha256=sha256,
                source="infra/release-model.yaml",
                updated_by=updated_by,
                text=text,
                model=RELEASE_MODEL,
            ),
        ),
    )


def _gate(
    model: type[GatePassed] | type[GateFailed], result: str, *, service: str, version: str,
    digest: str, environment: str, source: str,
) -> CDEvent:  # fmt: skip
    return model(
        context=model.new_context(source),
        subject=GateSubject(
            id=f"{service}@{version}:{environment}",
            content=GateDecisionContent(
                service=service,
                version=version,
                digest=digest,
                artifact_id=_ref(service, version, digest).purl(),
                environment=environment,
                result=result,
                score=83.33 if result == "warning" else 41.67,
                criteria=[
                    CriterionVerdict(
                        criterion="benchmark p99_latency",
                        verdict="warning" if result == "warning" else "fail",
                        key=False,
                        weight=1,
                        measured={"value": 107, "baseline": 100, "regression_percent": 7.0},
                        reason="p99_latency 7.0 % worse (warn above 5 %)",
                    )
                ],
                conditions=[],
                policy_sha256=POLICY_SHA256,
                evidence_ids=[str(uuid.uuid4())],
            ),
        ),
    )


@_sample_of(GatePassed, default=True)
def _gate_passed(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/gates",
) -> CDEvent:  # fmt: skip
    return _gate(
        GatePassed, "warning", service=service, version=version, digest=digest,
        environment=environment, source=source,
    )  # fmt: skip


@_sample_of(GateFailed, default=True)
def _gate_failed(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/gates",
) -> CDEvent:  # fmt: skip
    return _gate(
        GateFailed, "fail", service=service, version=version, digest=digest,
        environment=environment, source=source,
    )  # fmt: skip


@_sample_of(ApprovalUpdated, default=True)
def _approval(
    *, service: str = SERVICE, version: str = VERSION, environment: str = ENVIRONMENT,
    by: str = "alice", decision: str = "approved", source: str = "lockstep/cli",
) -> CDEvent:  # fmt: skip
    return ApprovalUpdated.build(
        service=service, version=version, environment=environment, by=by,
        decision=decision, source=source,  # type: ignore[arg-type]  # the model checks it
    )  # fmt: skip


@_sample_of(ApprovalRefused, default=True)
def _approval_refused(
    *, service: str = SERVICE, version: str = VERSION, environment: str = ENVIRONMENT,
    by: str = "mallory",
) -> CDEvent:  # fmt: skip
    # as services/gates builds it
    return ApprovalRefused(
        context=ApprovalRefused.new_context("lockstep/gates"),
        subject=RefusedApprovalSubject(
            id=f"{service}@{version}:{environment}",
            content=RefusedApprovalContent(
                who=by,
                decision="approved",
                reason=f"{by} is not an approver of {service} for {environment} "
                "(approvers: owners (payments: alice, bob))",
                refused_event_id=str(uuid.uuid4()),
                policy_sha256=POLICY_SHA256,
            ),
        ),
        custom_data=ApprovalTarget(service=service, version=version, environment=environment),
    )


# --- promotions and deployments ----------------------------------------------------------------


@_sample_of(PromotionApproved, default=True)
def _approved(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/promotion",
) -> CDEvent:  # fmt: skip
    pid = promotion_id(service, version, digest, environment, POLICY_SHA256)
    return PromotionApproved(
        context=PromotionApproved.new_context(source),
        subject=ApprovedSubject(
            id=pid,
            content=ApprovedContent(
                promotion_id=pid,
                service=service,
                version=version,
                digest=digest,
                artifact_id=_ref(service, version, digest).purl(),
                environment=environment,
                train="shop",
                policy_sha256=POLICY_SHA256,
                previous_version="1.4.1",
                previous_digest=OTHER_DIGEST,
            ),
        ),
    )


@_sample_of(PromotionBlocked, default=True)
def _blocked(
    *, service: str = SERVICE, version: str = VERSION, environment: str = ENVIRONMENT,
    source: str = "lockstep/promotion",
) -> CDEvent:  # fmt: skip
    return PromotionBlocked(
        context=PromotionBlocked.new_context(source),
        subject=BlockedSubject(
            id=f"{service}@{version}:{environment}",
            content=BlockedContent(
                service=service,
                version=version,
                environment=environment,
                holds=[
                    HoldView(
                        kind="window",
                        reason=f"{environment} frozen until 2027-01-04 09:00 Europe/Berlin "
                        "(freeze)",
                        until=datetime(2027, 1, 4, 8, 0, tzinfo=UTC),
                    )
                ],
                policy_sha256=POLICY_SHA256,
            ),
        ),
    )


@_sample_of(HoldReleased, default=True)
def _hold_released(
    *, service: str = SERVICE, version: str = VERSION, by: str = "alice",
    source: str = "lockstep/cli",
) -> CDEvent:  # fmt: skip
    return HoldReleased(
        context=HoldReleased.new_context(source),
        subject=HoldReleasedSubject(
            id=service,
            content=HoldReleasedContent(
                service=service, version=version, by=by, reason="fixed by config"
            ),
        ),
    )


def _runs_in(
    model: type[ServiceDeployed] | type[ServiceRolledBack], *, service: str, version: str,
    digest: str, environment: str, source: str,
) -> CDEvent:  # fmt: skip
    return model(
        context=model.new_context(source),
        subject=DeployedSubject(
            id=service,
            content=DeployedContent(
                environment=Reference(id=environment),
                artifact_id=_ref(service, version, digest).purl(),
            ),
        ),
        custom_data=DeploymentFacts(promotion_id=PROMOTION_ID, agent=AGENT),
    )


@_sample_of(ServiceDeployed, default=True)
def _deployed(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = f"lockstep/deployer/{AGENT}",
) -> CDEvent:  # fmt: skip
    return _runs_in(
        ServiceDeployed, service=service, version=version, digest=digest,
        environment=environment, source=source,
    )  # fmt: skip


@_sample_of(ServiceRolledBack, default=True)
def _rolled_back(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = f"lockstep/deployer/{AGENT}",
) -> CDEvent:  # fmt: skip
    return _runs_in(
        ServiceRolledBack, service=service, version=version, digest=digest,
        environment=environment, source=source,
    )  # fmt: skip


@_sample_of(DeploymentFailed, default=True)
def _deployment_failed(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = f"lockstep/deployer/{AGENT}",
) -> CDEvent:  # fmt: skip
    return DeploymentFailed(
        context=DeploymentFailed.new_context(source),
        subject=FailedSubject(
            id=service,
            content=FailedContent(
                environment=environment,
                artifact_id=_ref(service, version, digest).purl(),
                promotion_id=PROMOTION_ID,
                agent=AGENT,
                reason="image pull failed: manifest unknown",
            ),
        ),
    )


# --- flags -------------------------------------------------------------------------------------


@_sample_of(FlagChangeRequested, default=True)
def _flag_change_requested(
    *, environment: str = ENVIRONMENT, flag_key: str = "checkout-v2",
    requested_by: str = "incidents", source: str = "lockstep/incidents",
) -> CDEvent:  # fmt: skip
    return FlagChangeRequested.build(
        environment=environment, flag_key=flag_key, action="disable", requested_by=requested_by,
        reason="kill switch", incident_id=INCIDENT, source=source,
    )  # fmt: skip


@_sample_of(FlagChangeRequested)
def _flag_set_requested() -> CDEvent:
    return FlagChangeRequested.build(
        environment=ENVIRONMENT, flag_key="checkout-v2", action="set", requested_by="alice",
        reason="new variant", definition=KILL_SWITCH,
    )  # fmt: skip


@_sample_of(FlagChanged, default=True)
def _flag_changed(
    *, environment: str = ENVIRONMENT, flag_key: str = "checkout-v2",
    source: str = "lockstep/flags",
) -> CDEvent:  # fmt: skip
    return FlagChanged(
        context=FlagChanged.new_context(source),
        subject=ChangedSubject(
            id=f"{environment}/{flag_key}",
            content=ChangedContent(
                environment=environment,
                flag_key=flag_key,
                version=3,
                action="disable",
                changed_by="incidents",
                reason="kill switch: error_rate > 2 %",
                source="kafka",
                definition={**KILL_SWITCH, "state": "DISABLED"},
                previous=KILL_SWITCH,
                request_id="5d1d7f3e-0000-4000-8000-000000000001",
            ),
        ),
    )


@_sample_of(FlagChanged)
def _flag_created() -> CDEvent:
    return FlagChanged(
        context=FlagChanged.new_context("lockstep/flags"),
        subject=ChangedSubject(
            id=f"{ENVIRONMENT}/checkout-v2",
            content=ChangedContent(
                environment=ENVIRONMENT,
                flag_key="checkout-v2",
                version=1,
                action="set",
                changed_by="alice",
                reason="ship dark",
                source="cli",
                definition=KILL_SWITCH,
            ),
        ),
    )


@_sample_of(FlagChangeRejected, default=True)
def _flag_change_rejected(
    *, environment: str = ENVIRONMENT, flag_key: str = "nope", source: str = "lockstep/flags"
) -> CDEvent:
    return FlagChangeRejected(
        context=FlagChangeRejected.new_context(source),
        subject=ChangeRejectedSubject(
            id=f"{environment}/{flag_key}",
            content=ChangeRejectedContent(
                environment=environment,
                flag_key=flag_key,
                action="disable",
                requested_by="incidents",
                request_id="5d1d7f3e-0000-4000-8000-000000000002",
                reason=f"{environment} has no flag {flag_key!r}",
            ),
        ),
    )


# --- incidents and signals ---------------------------------------------------------------------


def _incident_subject(
    description: str, *, service: str, version: str, digest: str, environment: str
) -> IncidentSubject:
    return IncidentSubject(
        id=INCIDENT,
        content=IncidentContent(
            description=description,
            environment=Reference(id=environment),
            service=Reference(id=service),
            artifact_id=_ref(service, version, digest).purl(),
        ),
    )


@_sample_of(IncidentDetected, default=True)
def _incident(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/incidents",
) -> CDEvent:  # fmt: skip
    return IncidentDetected(
        context=IncidentDetected.new_context(source),
        subject=_incident_subject(
            "error_rate 4.1 % > 2 % for 5 min", service=service, version=version, digest=digest,
            environment=environment,
        ),
    )  # fmt: skip


@_sample_of(IncidentDetected)
def _incident_with_facts() -> CDEvent:
    return _incident().model_copy(
        update={
            "custom_data": IncidentFacts(
                dedup_key=f"{SERVICE}/{ENVIRONMENT}", version=VERSION, digest=DIGEST,
                promotion_id=PROMOTION_ID, trace_id="a" * 32, criterion="error-rate",
                rollback=True,
            )
        }
    )  # fmt: skip


@_sample_of(IncidentResolved, default=True)
def _incident_resolved(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/incidents",
) -> CDEvent:  # fmt: skip
    return IncidentResolved(
        context=IncidentResolved.new_context(source),
        subject=_incident_subject(
            "rolled back to 1.4.1", service=service, version=version, digest=digest,
            environment=environment,
        ),
        custom_data=IncidentFacts(dedup_key=f"{service}/{environment}", rollback=True, by="alice"),
    )  # fmt: skip


@_sample_of(RollbackRequested, default=True)
def _rollback(
    *, service: str = SERVICE, version: str = VERSION, digest: str = DIGEST,
    environment: str = ENVIRONMENT, source: str = "lockstep/incidents",
) -> CDEvent:  # fmt: skip
    return RollbackRequested(
        context=RollbackRequested.new_context(source),
        subject=RollbackSubject(
            id=INCIDENT,
            content=RollbackContent(
                incident_id=INCIDENT, service=service, environment=environment,
                bad_version=version, bad_digest=digest, reason="error_rate 4 % > 2 % for 5m",
            ),
        ),
    )  # fmt: skip


@_sample_of(IncidentNotified, default=True)
def _notified(*, recipient: str = "payments-oncall", source: str = "lockstep/incidents") -> CDEvent:
    return IncidentNotified(
        context=IncidentNotified.new_context(source),
        subject=NotifiedSubject(
            id=INCIDENT,
            content=NotifiedContent(
                incident_id=INCIDENT, level=1, recipient=recipient,
                message=f"{SERVICE} error_rate in {ENVIRONMENT}",
            ),
        ),
    )  # fmt: skip


@_sample_of(IncidentAcknowledged, default=True)
def _acknowledged(*, by: str = "alice", source: str = "lockstep/incidents") -> CDEvent:
    return IncidentAcknowledged(
        context=IncidentAcknowledged.new_context(source),
        subject=AcknowledgedSubject(
            id=INCIDENT, content=AcknowledgedContent(incident_id=INCIDENT, by=by)
        ),
    )


@_sample_of(RunbookStepFinished, default=True)
def _step(*, outcome: str = "paused", source: str = "lockstep/incidents") -> CDEvent:
    return RunbookStepFinished(
        context=RunbookStepFinished.new_context(source),
        subject=StepSubject(
            id=INCIDENT,
            content=StepContent(
                incident_id=INCIDENT, runbook="high-error-rate", step="check dashboards",
                index=1, outcome=outcome, detail="waiting for a person",
            ),
        ),
    )  # fmt: skip


@_sample_of(SignatureRefusal, default=True)
def _signature_refused(
    *, service: str = "promotion", reason: str = "unsigned", source: str = "lockstep/promotion"
) -> CDEvent:
    return SignatureRefusal.build(
        service=service, source=source, reason=reason,
        detail="GatePassed 5d1d7f3e-0000-4000-8000-000000000003 is unsigned",
        topic="lockstep.gates", partition=0, offset=42,
        event_id="5d1d7f3e-0000-4000-8000-000000000003",
        event_type=GatePassed.TYPE, claimed_source="lockstep/gates",
    )  # fmt: skip


@_sample_of(SignalObserved, default=True)
def _metric(
    *, service: str = SERVICE, environment: str = ENVIRONMENT, metric: str = "error_rate",
    value: float = 0.041, source: str = "prometheus",
) -> CDEvent:  # fmt: skip
    return SignalObserved.build(
        service=service, environment=environment, metric=metric, value=value,
        window_seconds=60, source=source,
    )  # fmt: skip


@_sample_of(SignalObserved)
def _alert() -> CDEvent:
    return SignalObserved.build(
        service=SERVICE,
        environment=ENVIRONMENT,
        metric="HighErrorRate",
        value=None,
        source="alertmanager",
        kind="alert",
        status="firing",
        dedup_key="ab12",
        severity="critical",
        summary="5xx above 2 %",
        labels={"team": "payments"},
    )
