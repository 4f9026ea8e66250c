"""The event contract against the world outside: the official CDEvents schemas, what other
CDEvents producers send, the official CloudEvents SDK, and the exported JSON Schemas and
AsyncAPI document (DESIGN §2). No servers."""

from __future__ import annotations

import copy
import inspect
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydantic
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from events import (
    EVENT_TYPES,
    ArtifactFacts,
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRef,
    ArtifactRefError,
    ArtifactRejected,
    BenchmarkFinished,
    CDEvent,
    EvidenceRecorded,
    EvidenceRejected,
    KafkaRecord,
    SecurityScanFinished,
    TestSuiteRunFinished,
    decode,
    encode,
    known_types,
)
from events import topics as topic_names
from events._base import Reference
from events.approvals import ApprovalUpdated
from events.artifacts import (
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
    EvidenceRejectedContent,
    EvidenceRejectedSubject,
    Findings,
    Measurement,
    RecordedContent,
    RecordedSubject,
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
from events.policy import PolicyUpdated
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
from events.schema import DEFAULT_BOOTSTRAP, DEFAULT_PARTITIONS, export, schema_id
from events.signals import SignalObserved
from policy import load as load_release_model
from policy import policy_updated
from shared.bus.dlq import HEADER_PREFIX, dead_letter, reason_of
from shared.settings import Settings

# the official schemas, copied unchanged into the repository (events/cdevents/SOURCES.json)
CDEVENTS_DIR = Path(__file__).resolve().parents[2] / "events" / "cdevents"
OFFICIAL_DIR = CDEVENTS_DIR / "v0.5.1"
FORMATS = Draft202012Validator.FORMAT_CHECKER

DIGEST = "sha256:" + "3f9a0c17" * 8
OTHER_DIGEST = "sha256:" + "0b" * 32
COMMIT = "9c1e2f4a7b3d5e6f8a0b1c2d3e4f5a6b7c8d9e0f"
REPO = "https://github.com/acme/checkout"
SBOM_URI = "https://sbom.acme.example/checkout/1.4.2.spdx.json"
REF = ArtifactRef("checkout", "1.4.2", DIGEST)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CUSTOM_TYPE_RE = re.compile(
    r"^dev\.cdeventsx\.(?P<tool>[a-z0-9]+)-(?P<subject>[a-z][a-z0-9]*)"
    r"\.(?P<predicate>[a-z][a-z0-9]*)\.(?P<version>\d+\.\d+\.\d+)$"
)


# --- realistic events of every type -----------------------------------------------------------


def _packaged() -> CDEvent:
    return ArtifactPackaged.build(
        service="checkout",
        version="1.4.2",
        digest=DIGEST,
        commit=COMMIT,
        source="https://ci.acme.example/pipelines/checkout/runs/812",
        repo=REPO,
        sbom_uri=SBOM_URI,
    )


def _packaged_minimal() -> CDEvent:
    return ArtifactPackaged.build(service="checkout", version="1.4.2", digest=DIGEST, commit=COMMIT)


def _published(sbom: bool = True) -> CDEvent:
    # as services/artifacts/handlers.py builds it
    return ArtifactPublished(
        context=ArtifactPublished.new_context("lockstep/artifacts"),
        subject=PublishedSubject(
            id=REF.purl(),
            content=PublishedContent(sbom=SbomRef(uri=SBOM_URI) if sbom else None),
        ),
        custom_data=ArtifactFacts(
            service=REF.service,
            version=REF.version,
            digest=DIGEST,
            commit=COMMIT,
            commit_source=REPO if sbom else None,
            packaged_event_id=str(uuid.uuid4()),
        ),
    )


def _tests() -> CDEvent:
    return TestSuiteRunFinished.build(
        artifact=REF,
        suite="integration",
        outcome="failure",
        environment="ci",
        passed=41,
        failed=1,
        skipped=2,
        run_id="gh-run-1187",
        source="https://github.com/acme/checkout/actions",
        reason="1 test failed: test_refund_rounding",
    )


def _tests_minimal() -> CDEvent:
    return TestSuiteRunFinished.build(
        artifact=ArtifactRef("checkout", "1.4.2"), suite="smoke", outcome="success"
    )


def _scan() -> CDEvent:
    return SecurityScanFinished.build(
        artifact=REF,
        scanner="trivy",
        findings=Findings(critical=0, high=1, medium=3, low=7),
        report_uri="https://ci.acme.example/scans/812.json",
    )


def _benchmark() -> CDEvent:
    return BenchmarkFinished.build(
        artifact=REF,
        benchmark="checkout-load",
        metrics={
            "p99_latency": Measurement(value=212.5, unit="ms"),
            "throughput": Measurement(value=1840, unit="req/s", higher_is_better=True),
        },
    )


def _rejected() -> CDEvent:
    return ArtifactRejected(
        context=ArtifactRejected.new_context("lockstep/artifacts"),
        subject=RejectedSubject(
            id=ArtifactRef("checkout", "1.4.2").purl(),
            content=RejectedContent(
                code="missing_digest",
                reason="artifact id carries no sha256 digest",
                service="checkout",
                version="1.4.2",
                rejected_event_id=str(uuid.uuid4()),
            ),
        ),
    )


def _recorded() -> CDEvent:
    source_id = str(uuid.uuid4())
    return EvidenceRecorded(
        context=EvidenceRecorded.new_context("lockstep/artifacts"),
        subject=RecordedSubject(
            id=source_id,
            source="https://github.com/acme/checkout/actions",
            content=RecordedContent(
                artifact_id=REF.purl(),
                service=REF.service,
                version=REF.version,
                digest=DIGEST,
                kind="tests",
                passed=True,
                details={"outcome": "success", "suite": "integration", "passed": 42},
                source_event_id=source_id,
                source_event_type=TestSuiteRunFinished.TYPE,
            ),
        ),
    )


def _evidence_rejected() -> CDEvent:
    source_id = str(uuid.uuid4())
    return EvidenceRejected(
        context=EvidenceRejected.new_context("lockstep/artifacts"),
        subject=EvidenceRejectedSubject(
            id=source_id,
            content=EvidenceRejectedContent(
                artifact_id=ArtifactRef("checkout", "1.4.2", OTHER_DIGEST).purl(),
                code="digest_mismatch",
                reason="checkout@1.4.2 is registered with another digest",
                source_event_id=source_id,
            ),
        ),
    )


def _policy() -> CDEvent:
    root = Path(__file__).resolve().parents[2]
    return policy_updated(
        load_release_model(root / "infra" / "release-model.yaml"), updated_by="platform-team"
    )


def _gate(model: type[GatePassed] | type[GateFailed], result: str) -> CDEvent:
    return model(
        context=model.new_context("lockstep/gates"),
        subject=GateSubject(
            id="checkout@1.4.2:prod-eu",
            content=GateDecisionContent(
                service="checkout",
                version="1.4.2",
                digest=DIGEST,
                artifact_id=REF.purl(),
                environment="prod-eu",
                result=result,  # type: ignore[arg-type]
                score=83.33,
                criteria=[
                    CriterionVerdict(
                        criterion="benchmark p99_latency",
                        verdict="warning",
                        key=False,
                        weight=1,
                        measured={"value": 107, "baseline": 100, "regression_percent": 7.0},
                        reason="p99_latency 7.0 % worse (warn above 5 %)",
                    )
                ],
                conditions=[],
                policy_sha256="a" * 64,
                evidence_ids=[str(uuid.uuid4())],
            ),
        ),
    )


def _deployed() -> CDEvent:
    return ServiceDeployed(
        context=ServiceDeployed.new_context("lockstep/deployer/eu-1"),
        subject=DeployedSubject(
            id="checkout",
            content=DeployedContent(environment=Reference(id="prod-eu"), artifact_id=REF.purl()),
        ),
        custom_data=DeploymentFacts(promotion_id="prm-0123456789abcdef01234567", agent="eu-1"),
    )


def _deployment_failed() -> CDEvent:
    return DeploymentFailed(
        context=DeploymentFailed.new_context("lockstep/deployer/eu-1"),
        subject=FailedSubject(
            id="checkout",
            content=FailedContent(
                environment="prod-eu",
                artifact_id=REF.purl(),
                promotion_id="prm-0123456789abcdef01234567",
                agent="eu-1",
                reason="image pull failed: manifest unknown",
            ),
        ),
    )


def _approved() -> CDEvent:
    pid = promotion_id("checkout", "1.4.2", DIGEST, "prod-eu", "a" * 64)
    return PromotionApproved(
        context=PromotionApproved.new_context("lockstep/promotion"),
        subject=ApprovedSubject(
            id=pid,
            content=ApprovedContent(
                promotion_id=pid,
                service="checkout",
                version="1.4.2",
                digest=DIGEST,
                artifact_id=REF.purl(),
                environment="prod-eu",
                train="shop",
                policy_sha256="a" * 64,
                previous_version="1.4.1",
                previous_digest=OTHER_DIGEST,
            ),
        ),
    )


def _blocked() -> CDEvent:
    return PromotionBlocked(
        context=PromotionBlocked.new_context("lockstep/promotion"),
        subject=BlockedSubject(
            id="checkout@1.4.2:prod-eu",
            content=BlockedContent(
                service="checkout",
                version="1.4.2",
                environment="prod-eu",
                holds=[
                    HoldView(
                        kind="window",
                        reason="prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (freeze)",
                        until=datetime(2027, 1, 4, 8, 0, tzinfo=UTC),
                    )
                ],
                policy_sha256="a" * 64,
            ),
        ),
    )


KILL_SWITCH = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "metadata": {"type": "kill-switch", "owner": "payments"},
}


def _flag_changed() -> CDEvent:
    return FlagChanged(
        context=FlagChanged.new_context("lockstep/flags"),
        subject=ChangedSubject(
            id="prod-eu/checkout-v2",
            content=ChangedContent(
                environment="prod-eu",
                flag_key="checkout-v2",
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


def _flag_created() -> CDEvent:
    return FlagChanged(
        context=FlagChanged.new_context("lockstep/flags"),
        subject=ChangedSubject(
            id="prod-eu/checkout-v2",
            content=ChangedContent(
                environment="prod-eu",
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


def _flag_change_rejected() -> CDEvent:
    return FlagChangeRejected(
        context=FlagChangeRejected.new_context("lockstep/flags"),
        subject=ChangeRejectedSubject(
            id="prod-eu/nope",
            content=ChangeRejectedContent(
                environment="prod-eu",
                flag_key="nope",
                action="disable",
                requested_by="incidents",
                request_id="5d1d7f3e-0000-4000-8000-000000000002",
                reason="prod-eu has no flag 'nope'",
            ),
        ),
    )


def _incident() -> CDEvent:
    return IncidentDetected(
        context=IncidentDetected.new_context("lockstep/incidents"),
        subject=IncidentSubject(
            id="inc-0001",
            content=IncidentContent(
                description="error_rate 4.1 % > 2 % for 5 min",
                environment=Reference(id="prod-eu"),
                service=Reference(id="checkout"),
                artifact_id=REF.purl(),
            ),
        ),
    )


def _incident_resolved() -> CDEvent:
    return IncidentResolved(
        context=IncidentResolved.new_context("lockstep/incidents"),
        subject=IncidentSubject(
            id="inc-0001",
            content=IncidentContent(
                description="rolled back to 1.4.1",
                environment=Reference(id="prod-eu"),
                service=Reference(id="checkout"),
                artifact_id=REF.purl(),
            ),
        ),
        custom_data=IncidentFacts(dedup_key="checkout/prod-eu", rollback=True, by="alice"),
    )


def _incident_with_facts() -> CDEvent:
    event = _incident()
    assert isinstance(event, IncidentDetected)
    return event.model_copy(
        update={
            "custom_data": IncidentFacts(
                dedup_key="checkout/prod-eu", version="1.4.2", digest=DIGEST,
                promotion_id="prm-0123456789abcdef01234567", trace_id="a" * 32,
                criterion="error-rate", rollback=True,
            )
        }
    )  # fmt: skip


def _rollback() -> CDEvent:
    return RollbackRequested(
        context=RollbackRequested.new_context("lockstep/incidents"),
        subject=RollbackSubject(
            id="inc-0001",
            content=RollbackContent(
                incident_id="inc-0001", service="checkout", environment="prod-eu",
                bad_version="1.4.2", bad_digest=DIGEST, reason="error_rate 4 % > 2 % for 5m",
            ),
        ),
    )  # fmt: skip


def _rolled_back() -> CDEvent:
    return ServiceRolledBack(
        context=ServiceRolledBack.new_context("lockstep/deployer/eu-1"),
        subject=DeployedSubject(
            id="checkout",
            content=DeployedContent(environment=Reference(id="prod-eu"), artifact_id=REF.purl()),
        ),
        custom_data=DeploymentFacts(promotion_id="prm-0123456789abcdef01234567", agent="eu-1"),
    )


def _notified() -> CDEvent:
    return IncidentNotified(
        context=IncidentNotified.new_context("lockstep/incidents"),
        subject=NotifiedSubject(
            id="inc-0001",
            content=NotifiedContent(
                incident_id="inc-0001", level=1, recipient="payments-oncall",
                message="checkout error_rate in prod-eu",
            ),
        ),
    )  # fmt: skip


def _acknowledged() -> CDEvent:
    return IncidentAcknowledged(
        context=IncidentAcknowledged.new_context("lockstep/incidents"),
        subject=AcknowledgedSubject(
            id="inc-0001", content=AcknowledgedContent(incident_id="inc-0001", by="alice")
        ),
    )


def _step() -> CDEvent:
    return RunbookStepFinished(
        context=RunbookStepFinished.new_context("lockstep/incidents"),
        subject=StepSubject(
            id="inc-0001",
            content=StepContent(
                incident_id="inc-0001", runbook="high-error-rate", step="check dashboards",
                index=1, outcome="paused", detail="waiting for a person",
            ),
        ),
    )  # fmt: skip


def _hold_released() -> CDEvent:
    return HoldReleased(
        context=HoldReleased.new_context("lockstep/cli"),
        subject=HoldReleasedSubject(
            id="checkout",
            content=HoldReleasedContent(
                service="checkout", version="1.4.2", by="alice", reason="fixed by config"
            ),
        ),
    )


SAMPLES: dict[str, list[Callable[[], CDEvent]]] = {
    IncidentResolved.TYPE: [_incident_resolved],
    RollbackRequested.TYPE: [_rollback],
    ServiceRolledBack.TYPE: [_rolled_back],
    IncidentNotified.TYPE: [_notified],
    IncidentAcknowledged.TYPE: [_acknowledged],
    RunbookStepFinished.TYPE: [_step],
    HoldReleased.TYPE: [_hold_released],
    SignalObserved.TYPE: [
        lambda: SignalObserved.build(
            service="checkout",
            environment="prod-eu",
            metric="error_rate",
            value=0.041,
            window_seconds=60,
            source="prometheus",
        ),
        lambda: SignalObserved.build(
            service="checkout",
            environment="prod-eu",
            metric="HighErrorRate",
            value=None,
            source="alertmanager",
            kind="alert",
            status="firing",
            dedup_key="ab12",
            severity="critical",
            summary="5xx above 2 %",
            labels={"team": "payments"},
        ),
    ],
    FlagChangeRequested.TYPE: [
        lambda: FlagChangeRequested.build(
            environment="prod-eu",
            flag_key="checkout-v2",
            action="disable",
            requested_by="incidents",
            reason="kill switch",
            incident_id="inc-0001",
        ),
        lambda: FlagChangeRequested.build(
            environment="prod-eu",
            flag_key="checkout-v2",
            action="set",
            requested_by="alice",
            reason="new variant",
            definition=KILL_SWITCH,
        ),
    ],
    FlagChanged.TYPE: [_flag_changed, _flag_created],
    FlagChangeRejected.TYPE: [_flag_change_rejected],
    IncidentDetected.TYPE: [_incident, _incident_with_facts],
    ApprovalUpdated.TYPE: [
        lambda: ApprovalUpdated.build(
            service="checkout",
            version="1.4.2",
            environment="prod-eu",
            by="alice",
            decision="approved",
        )
    ],
    ServiceDeployed.TYPE: [_deployed],
    DeploymentFailed.TYPE: [_deployment_failed],
    PromotionApproved.TYPE: [_approved],
    PromotionBlocked.TYPE: [_blocked],
    PolicyUpdated.TYPE: [_policy],
    GatePassed.TYPE: [lambda: _gate(GatePassed, "warning")],
    GateFailed.TYPE: [lambda: _gate(GateFailed, "fail")],
    ArtifactPackaged.TYPE: [_packaged, _packaged_minimal],
    ArtifactPublished.TYPE: [_published, lambda: _published(sbom=False)],
    ArtifactRejected.TYPE: [_rejected],
    TestSuiteRunFinished.TYPE: [_tests, _tests_minimal],
    SecurityScanFinished.TYPE: [_scan],
    BenchmarkFinished.TYPE: [_benchmark],
    EvidenceRecorded.TYPE: [_recorded],
    EvidenceRejected.TYPE: [_evidence_rejected],
}
ALL_SAMPLES = [
    pytest.param(make, id=f"{event_type}#{i}")
    for event_type, makes in SAMPLES.items()
    for i, make in enumerate(makes)
]
CDEVENTS_SAMPLES = [p for p in ALL_SAMPLES if str(p.id).startswith("dev.cdevents.")]
CUSTOM_SAMPLES = [p for p in ALL_SAMPLES if str(p.id).startswith("dev.cdeventsx.")]
CUSTOM_MODELS = [m for m in EVENT_TYPES if m.TYPE.startswith("dev.cdeventsx.")]


def _doc(event: CDEvent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(event.to_json())
    return data


def _errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def test_every_event_type_has_samples_and_is_cdevents_or_custom() -> None:
    assert set(SAMPLES) == set(known_types()), "add samples for new event types to SAMPLES"
    for model in EVENT_TYPES:
        assert model.TYPE.startswith(("dev.cdevents.", "dev.cdeventsx.")), model.TYPE
        for make in SAMPLES[model.TYPE]:
            assert type(make()) is model
    assert CDEVENTS_SAMPLES and CUSTOM_SAMPLES and CUSTOM_MODELS


# --- a. the official CDEvents v0.5.1 schemas -------------------------------------------------


class Official:
    """Every file under events/cdevents registered by its $id, and each event schema by type."""

    def __init__(self, root: Path) -> None:
        if not (root / "v0.5.1").is_dir():
            pytest.fail(
                f"the official CDEvents schemas are not at {root / 'v0.5.1'} (events/cdevents/ "
                "in the repository); they are needed to check the contract"
            )
        resources: list[tuple[str, Resource[Any]]] = []
        self.by_type: dict[str, dict[str, Any]] = {}
        self.by_name: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in root.rglob("*.json") if p.name != "SOURCES.json"):
            schema = json.loads(path.read_text(encoding="utf-8"))
            resources.append((schema["$id"], Resource.from_contents(schema, DRAFT202012)))
            if path.parent in (root / "v0.5.1", root / "draft-0.6.0"):  # approvals: the draft
                self.by_name[path.stem] = schema
                for event_type in schema["properties"]["context"]["properties"]["type"]["enum"]:
                    self.by_type[event_type] = schema
        self.registry: Registry[Any] = Registry().with_resources(resources)

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, registry=self.registry, format_checker=FORMATS)

    def for_type(self, event_type: str) -> Draft202012Validator:
        schema = self.by_type.get(event_type)
        if schema is None:
            pytest.fail(f"{event_type} has no official CDEvents schema (v0.5.1 or draft 0.6.0)")
        return self.validator(schema)


@pytest.fixture(scope="module")
def official() -> Official:
    missing = {"date-time", "uri", "uri-reference"} - set(FORMATS.checkers)
    assert not missing, (
        f"jsonschema cannot check the formats {sorted(missing)}: install rfc3339-validator and "
        "rfc3986-validator, or format checking is silently off"
    )
    return Official(CDEVENTS_DIR)


def test_official_schemas_are_all_registered_and_resolve(official: Official) -> None:
    assert len(official.by_name) >= 40
    for schema in official.by_name.values():
        Draft202012Validator.check_schema(schema)
    # the relative "links/embeddedlinksarray" reference resolves through the registry
    resolved = official.registry.resolver(official.by_name["artifactpackaged"]["$id"]).lookup(
        "links/embeddedlinksarray"
    )
    assert resolved.contents["$id"].endswith("/links/embeddedlinksarray")


@pytest.mark.parametrize("make", CDEVENTS_SAMPLES)
def test_cdevents_typed_event_validates_against_the_official_schema(
    make: Callable[[], CDEvent], official: Official
) -> None:
    event = make()
    errors = _errors(official.for_type(event.context.type), _doc(event))
    assert not errors, f"{event.context.type} breaks the official schema:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("context", "type"), "dev.cdevents.artifact.packaged.0.2.0"),
        (("context", "timestamp"), "yesterday"),
        (("context", "source"), "not a uri reference"),
        (("subject", "content", "sbom", "uri"), "http://[broken"),
        (("subject", "flavour"), "extra"),
        (("subject", "content", "change"), None),
    ],
)
def test_the_official_validator_really_checks(
    path: tuple[str, ...], value: Any, official: Official
) -> None:
    doc = _doc(_packaged())
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    assert _errors(official.for_type(ArtifactPackaged.TYPE), doc)


# --- b. what other CDEvents producers send ---------------------------------------------------


def _foreign_packaged(purl: str) -> dict[str, Any]:
    """An artifact.packaged as a Tekton pipeline (via the CDEvents Go SDK) writes it."""
    run = "/apis/tekton.dev/v1/namespaces/ci/pipelineruns/build-checkout-x7k2p"
    return {
        "context": {
            "specversion": "0.5.1",
            "id": "5b8c1f36-2d0e-4c8e-9a51-0c6e8f7d2a11",
            "source": run,
            "type": "dev.cdevents.artifact.packaged.0.3.0",
            "timestamp": "2025-03-04T10:11:12.345678Z",
            "chainId": "f1c2d3e4-0000-4000-8000-000000000001",
        },
        "subject": {
            "id": purl,
            "source": run,
            "content": {"change": {"id": COMMIT, "source": "github.com/acme/checkout"}},
        },
        "customData": {"tekton": {"pipelineRun": "build-checkout-x7k2p", "namespace": "ci"}},
        "customDataContentType": "application/json",
    }


def _record_of(doc: dict[str, Any], topic: str = "lockstep.artifacts") -> KafkaRecord:
    ctx = doc["context"]
    return KafkaRecord(
        topic=topic,
        key=b"checkout",
        value=json.dumps(doc).encode(),
        headers=(
            ("ce_specversion", b"1.0"),
            ("ce_id", ctx["id"].encode()),
            ("ce_source", ctx["source"].encode()),
            ("ce_type", ctx["type"].encode()),
            ("ce_time", ctx["timestamp"].encode()),
            ("ce_subject", doc["subject"]["id"].encode()),
            ("content-type", b"application/json"),
            ("traceparent", TRACEPARENT.encode()),
        ),
    )


@pytest.mark.parametrize(
    "purl",
    [
        f"pkg:oci/checkout@{DIGEST}?tag=1.4.2",
        f"pkg:oci/checkout@{DIGEST.replace(':', '%3A')}"
        "?repository_url=registry.acme.example/team/checkout&tag=1.4.2",
        f"pkg:generic/checkout@1.4.2?checksum={DIGEST}",
        f"pkg:generic/checkout@1.4.2?checksum=sha1:{'c' * 40},{DIGEST}",
    ],
)
def test_a_foreign_artifact_packaged_with_a_digest_is_accepted(
    purl: str, official: Official
) -> None:
    doc = _foreign_packaged(purl)
    assert not _errors(official.for_type(ArtifactPackaged.TYPE), doc), "the sample is not valid"
    decoded = decode(_record_of(doc))
    event = decoded.event
    assert isinstance(event, ArtifactPackaged)
    assert event.id == doc["context"]["id"]
    assert event.source == doc["context"]["source"]
    assert event.context.timestamp == datetime(2025, 3, 4, 10, 11, 12, 345678, tzinfo=UTC)
    assert event.subject.content.change.id == COMMIT
    assert event.custom_data == doc["customData"]
    assert event.ref() == ArtifactRef("checkout", "1.4.2", DIGEST)
    assert event.partition_key() == "checkout"
    assert decoded.trace_headers == {"traceparent": TRACEPARENT}


@pytest.mark.parametrize("purl", ["pkg:generic/checkout@1.4.2", "pkg:oci/checkout?tag=1.4.2"])
def test_a_foreign_artifact_packaged_without_a_digest_decodes_but_is_refused_with_a_reason(
    purl: str, official: Official
) -> None:
    doc = _foreign_packaged(purl)
    assert not _errors(official.for_type(ArtifactPackaged.TYPE), doc), "the sample is not valid"
    event = decode(_record_of(doc)).event
    assert isinstance(event, ArtifactPackaged)
    assert event.subject.id == purl
    with pytest.raises(ArtifactRefError) as caught:
        event.ref()
    assert caught.value.code == "missing_digest"
    assert "no sha256 digest" in caught.value.reason
    assert purl in caught.value.reason
    # what the artifacts service says back is itself a valid, decodable event
    rejected = ArtifactRejected(
        context=ArtifactRejected.new_context("lockstep/artifacts"),
        subject=RejectedSubject(
            id=event.subject.id,
            content=RejectedContent(
                code="missing_digest", reason=caught.value.reason, rejected_event_id=event.id
            ),
        ),
    )
    back = decode(encode(rejected, topic="lockstep.artifacts")).event
    assert isinstance(back, ArtifactRejected)
    assert back.subject.content.reason == caught.value.reason
    assert back.partition_key() == "checkout"


# --- c. Lockstep's custom events follow the CDEvents custom-event convention ------------------


@pytest.mark.parametrize("model", CUSTOM_MODELS, ids=lambda m: m.TYPE)
def test_custom_type_is_named_per_the_cdevents_convention(model: type[CDEvent]) -> None:
    match = CUSTOM_TYPE_RE.match(model.TYPE)
    assert match, f"{model.TYPE} is not dev.cdeventsx.<tool>-<subject>.<predicate>.<M.m.p>"
    assert match["tool"] == "lockstep"


@pytest.fixture(scope="module")
def custom_context(official: Official) -> Draft202012Validator:
    """The official CDEvents context schema, with ``type`` opened to dev.cdeventsx types."""
    context = copy.deepcopy(official.by_name["artifactpackaged"]["properties"]["context"])
    context["properties"]["type"] = {"type": "string", "pattern": CUSTOM_TYPE_RE.pattern}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        # beside the official schemas, so their relative links/ reference resolves
        "$id": "https://cdevents.dev/0.5.1/schema/x-lockstep-custom-context",
        **context,
    }
    return official.validator(schema)


@pytest.mark.parametrize("make", CUSTOM_SAMPLES)
def test_custom_event_has_the_cdevents_shape(
    make: Callable[[], CDEvent], custom_context: Draft202012Validator
) -> None:
    doc = _doc(make())
    errors = _errors(custom_context, doc["context"])
    assert not errors, "context breaks the CDEvents context schema:\n" + "\n".join(errors)
    assert set(doc) <= {"context", "subject", "customData", "customDataContentType"}
    assert isinstance(doc["subject"]["id"], str) and doc["subject"]["id"]
    assert isinstance(doc["subject"]["content"], dict)
    wrong = copy.deepcopy(doc["context"])
    del wrong["timestamp"]
    wrong["type"] = "dev.lockstep.gate.passed.0.1.0"
    assert len(_errors(custom_context, wrong)) == 2


# --- d. the official CloudEvents SDK reads our records, and we read its ---------------------


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_the_cloudevents_sdk_reads_what_lockstep_encodes(make: Callable[[], CDEvent]) -> None:
    event = make()
    record = encode(event, topic="lockstep.x", trace_headers={"traceparent": TRACEPARENT})
    message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value or b"")
    ce = from_binary(message, JSONFormat())
    assert ce.get_specversion() == "1.0"
    assert ce.get_id() == event.id
    assert ce.get_type() == event.TYPE
    assert ce.get_source() == event.source
    assert ce.get_time() == event.context.timestamp
    assert ce.get_datacontenttype() == "application/json"
    assert ce.get_subject() == event.subject.id
    assert ce.get_data() == _doc(event)
    assert ce.get_extension("partitionkey") == event.partition_key()


@pytest.mark.parametrize("with_content_type", [True, False])
@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_lockstep_decodes_what_the_cloudevents_sdk_encodes(
    make: Callable[[], CDEvent], with_content_type: bool
) -> None:
    event = make()
    data = _doc(event)
    attributes: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": event.TYPE,
        "time": event.context.timestamp,
        "subject": event.subject.id,
        "partitionkey": event.partition_key(),
    }
    if with_content_type:
        attributes["datacontenttype"] = "application/json"
    message = to_binary(CloudEvent(attributes, data), JSONFormat())
    key = message.key.encode() if isinstance(message.key, str) else message.key
    record = KafkaRecord(
        topic="lockstep.x", key=key, value=message.value, headers=tuple(message.headers.items())
    )
    decoded = decode(record).event
    assert type(decoded) is type(event)
    assert decoded == event


def test_lockstep_decodes_a_foreign_cdevent_sent_with_the_cloudevents_sdk() -> None:
    doc = _foreign_packaged(f"pkg:oci/checkout@{DIGEST}?tag=1.4.2")
    ce = CloudEvent(
        {
            "id": doc["context"]["id"],
            "source": doc["context"]["source"],
            "type": doc["context"]["type"],
            "datacontenttype": "application/json",
        },
        doc,
    )
    message = to_binary(ce, JSONFormat(), key_mapper=lambda _: b"checkout")
    record = KafkaRecord(
        topic="lockstep.artifacts",
        key=message.key if isinstance(message.key, bytes) else None,
        value=message.value,
        headers=tuple(message.headers.items()),
    )
    event = decode(record).event
    assert isinstance(event, ArtifactPackaged)
    assert event.ref() == REF
    assert record.key == b"checkout"


# --- e. the exported JSON Schemas and AsyncAPI document --------------------------------------

SETTINGS = Settings(
    namespace="lstest", kafka_bootstrap="kafka-1.acme.example:9092", topic_partitions=3
)

# one field each type requires, below the top level (model and schema must agree)
REQUIRED_PATHS: dict[str, tuple[str, ...]] = {
    ArtifactPackaged.TYPE: ("subject", "content", "change"),
    ArtifactPublished.TYPE: ("customData", "digest"),
    ArtifactRejected.TYPE: ("subject", "content", "code"),
    TestSuiteRunFinished.TYPE: ("subject", "content", "outcome"),
    SecurityScanFinished.TYPE: ("subject", "content", "findings"),
    BenchmarkFinished.TYPE: ("subject", "content", "metrics"),
    EvidenceRecorded.TYPE: ("subject", "content", "digest"),
    EvidenceRejected.TYPE: ("subject", "content", "reason"),
    PolicyUpdated.TYPE: ("subject", "content", "sha256"),
    GatePassed.TYPE: ("subject", "content", "policySha256"),
    GateFailed.TYPE: ("subject", "content", "criteria"),
    ServiceDeployed.TYPE: ("subject", "content", "artifactId"),
    DeploymentFailed.TYPE: ("subject", "content", "reason"),
    PromotionApproved.TYPE: ("subject", "content", "digest"),
    PromotionBlocked.TYPE: ("subject", "content", "holds"),
    ApprovalUpdated.TYPE: ("subject", "content", "decision"),
    FlagChangeRequested.TYPE: ("subject", "content", "action"),
    FlagChanged.TYPE: ("subject", "content", "version"),
    FlagChangeRejected.TYPE: ("subject", "content", "reason"),
    IncidentDetected.TYPE: ("subject", "content", "environment"),
    IncidentResolved.TYPE: ("subject", "content", "environment"),
    RollbackRequested.TYPE: ("subject", "content", "badVersion"),
    ServiceRolledBack.TYPE: ("subject", "content", "artifactId"),
    IncidentNotified.TYPE: ("subject", "content", "recipient"),
    IncidentAcknowledged.TYPE: ("subject", "content", "by"),
    RunbookStepFinished.TYPE: ("subject", "content", "outcome"),
    HoldReleased.TYPE: ("subject", "content", "by"),
    SignalObserved.TYPE: ("subject", "content", "observedAt"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    directory = tmp_path_factory.mktemp("contract") / "schemas"  # export creates it
    written = export(
        directory,
        SETTINGS.namespace,
        bootstrap=SETTINGS.kafka_bootstrap,
        partitions=SETTINGS.topic_partitions,
    )
    return directory, written


def test_export_defaults_are_a_default_installation(tmp_path: Path) -> None:
    """The contract names no settings; its defaults are the settings' defaults (not whatever
    LOCKSTEP_* this process has)."""
    fields = Settings.model_fields
    assert topic_names.DEFAULT_NAMESPACE == fields["namespace"].default == "lockstep"
    assert fields["kafka_bootstrap"].default == DEFAULT_BOOTSTRAP
    assert fields["topic_partitions"].default == DEFAULT_PARTITIONS
    export(tmp_path)
    document = json.loads((tmp_path / "asyncapi.json").read_text(encoding="utf-8"))
    assert document["id"] == "urn:lockstep:lockstep"
    assert document["servers"]["kafka"]["host"] == DEFAULT_BOOTSTRAP
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {f"lockstep.{t}" for t in topic_names.ALL}
    for channel in document["channels"].values():
        assert channel["bindings"]["kafka"]["partitions"] == DEFAULT_PARTITIONS


def _exported_validator(directory: Path, event_type: str) -> Draft202012Validator:
    schema = json.loads((directory / f"{event_type}.json").read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FORMATS)


def _without(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


def test_export_writes_a_schema_per_type_and_the_asyncapi_document(
    exported: tuple[Path, list[Path]],
) -> None:
    directory, written = exported
    expected = {f"{t}.json" for t in known_types()} | {"asyncapi.json"}
    assert sorted(p.name for p in written) == sorted(expected)
    assert {p.name for p in directory.iterdir()} == expected
    assert set(REQUIRED_PATHS) == set(known_types())
    for model in EVENT_TYPES:
        schema = json.loads((directory / f"{model.TYPE}.json").read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert (
            schema["$id"]
            == schema_id(model.TYPE)
            == f"https://lockstep.dev/schemas/{model.TYPE}.json"
        )
        assert schema["title"] == model.__name__
        assert schema["description"] == inspect.cleandoc(model.__doc__ or "")


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_exported_schema_accepts_our_events_and_rejects_broken_ones(
    make: Callable[[], CDEvent], exported: tuple[Path, list[Path]]
) -> None:
    event = make()
    model = type(event)
    validator = _exported_validator(exported[0], model.TYPE)
    doc = _doc(event)
    assert not _errors(validator, doc)

    for other in known_types():
        if other != model.TYPE:
            wrong = copy.deepcopy(doc)
            wrong["context"]["type"] = other
            errors = _errors(validator, wrong)
            assert errors and all(e.startswith("context/type") for e in errors), errors

    for path in [("subject", "id"), ("context", "source"), REQUIRED_PATHS[model.TYPE]]:
        broken = _without(doc, path)
        assert _errors(validator, broken), f"schema accepts {model.TYPE} without {path}"
        with pytest.raises(pydantic.ValidationError):
            model.model_validate(broken)
    # CDEvents requires the id (decode matches it to ce_id) and the timestamp
    for field in ("id", "timestamp", "specversion"):
        assert _errors(validator, _without(doc, ("context", field)))


@pytest.fixture(scope="module")
def asyncapi(exported: tuple[Path, list[Path]]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (exported[0] / "asyncapi.json").read_text(encoding="utf-8")
    )
    return document


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_asyncapi_document_describes_every_topic_and_message(
    asyncapi: dict[str, Any], exported: tuple[Path, list[Path]]
) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "Lockstep"
    assert asyncapi["info"]["version"] == version("lockstep")
    assert asyncapi["servers"]["kafka"] == asyncapi["servers"]["kafka"] | {
        "host": "kafka-1.acme.example:9092",
        "protocol": "kafka",
    }
    channels = asyncapi["channels"]
    assert sorted(c["address"] for c in channels.values()) == sorted(
        SETTINGS.topic(t) for t in topic_names.ALL
    )
    messages = asyncapi["components"]["messages"]
    referenced: set[str] = set()
    for channel in channels.values():
        for ref in channel["messages"].values():
            assert _resolve(asyncapi, ref["$ref"]) in messages.values()
            referenced.add(ref["$ref"].rsplit("/", 1)[1])
    assert referenced == set(messages), "a message no channel carries"

    for model in EVENT_TYPES:
        message = messages[model.__name__]
        channel = next(c for c in channels.values() if c["address"] == SETTINGS.topic(model.TOPIC))
        assert model.__name__ in channel["messages"]
        assert message["contentType"] == "application/json"
        payload = exported[0] / message["payload"]["$ref"]
        assert json.loads(payload.read_text(encoding="utf-8"))["$id"] == schema_id(model.TYPE)

    dlq = next(c for c in channels.values() if c["address"] == SETTINGS.topic(topic_names.DLQ))
    assert all(c["bindings"]["kafka"]["partitions"] == 3 for c in channels.values())
    assert dlq["messages"], "the DLQ channel carries dead letters"


def test_asyncapi_operations_cover_every_message(asyncapi: dict[str, Any]) -> None:
    covered: set[tuple[str, str]] = set()
    for name, operation in asyncapi["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel_ref = operation["channel"]["$ref"]
        channel = _resolve(asyncapi, channel_ref)
        for ref in operation["messages"]:
            assert ref["$ref"].startswith(channel_ref + "/messages/"), (name, ref)
            _resolve(asyncapi, ref["$ref"])
            covered.add((channel_ref, ref["$ref"].rsplit("/", 1)[1]))
        assert operation["messages"], name
        assert channel["messages"]
    carried = {
        (f"#/channels/{cid}", m) for cid, c in asyncapi["channels"].items() for m in c["messages"]
    }
    assert covered == carried
    actions = {
        m.rsplit("/", 1)[-1]: op["action"]
        for op in asyncapi["operations"].values()
        for m in (r["$ref"] for r in op["messages"])
    }
    assert actions["ArtifactPackaged"] == "receive"
    assert actions["TestSuiteRunFinished"] == "receive"
    assert actions["ArtifactPublished"] == "send"
    assert actions["EvidenceRecorded"] == "send"
    assert actions["DeadLetter"] == "send"


@pytest.mark.parametrize("make", ALL_SAMPLES)
def test_asyncapi_headers_and_key_describe_encoded_records(
    make: Callable[[], CDEvent], asyncapi: dict[str, Any]
) -> None:
    event = make()
    message = asyncapi["components"]["messages"][type(event).__name__]
    headers = Draft202012Validator(message["headers"], format_checker=FORMATS)
    key = Draft202012Validator(message["bindings"]["kafka"]["key"])
    record = encode(event, topic="x", trace_headers={"traceparent": TRACEPARENT})
    as_text = {k: v.decode() for k, v in record.headers}
    assert not _errors(headers, as_text)
    assert not _errors(key, (record.key or b"").decode())
    assert _errors(headers, as_text | {"ce_type": "dev.cdevents.artifact.deleted.0.2.0"})
    assert _errors(headers, {k: v for k, v in as_text.items() if k != "ce_id"})
    assert _errors(headers, as_text | {"ce_specversion": "0.3"})


def test_asyncapi_dead_letter_matches_what_the_bus_writes(asyncapi: dict[str, Any]) -> None:
    message = asyncapi["components"]["messages"]["DeadLetter"]
    headers = Draft202012Validator(message["headers"], format_checker=FORMATS)
    original = encode(_packaged(), topic="lockstep.artifacts")
    letter = dead_letter(
        original, dlq_topic="lockstep.dlq", error="boom", stage="handle", group="g", attempts=3
    )
    as_text = {k: v.decode() for k, v in letter.headers}
    assert not _errors(headers, as_text)
    dlq_names = {HEADER_PREFIX + k for k in reason_of(letter)}
    assert dlq_names == set(message["headers"]["required"])
    assert _errors(headers, as_text | {f"{HEADER_PREFIX}stage": "sometime"})
    missing = {k: v for k, v in as_text.items() if k != f"{HEADER_PREFIX}error"}
    assert _errors(headers, missing)
