"""Every event type Lockstep knows, looked up by its type string (any version of one major)."""

from __future__ import annotations

from events._base import CDEvent, split_type
from events.approvals import ApprovalUpdated
from events.artifacts import ArtifactPackaged, ArtifactPublished, ArtifactRejected
from events.deployments import DeploymentFailed, ServiceDeployed, ServiceRolledBack
from events.evidence import (
    BenchmarkFinished,
    EvidenceRecorded,
    EvidenceRejected,
    SecurityScanFinished,
    TestSuiteRunFinished,
)
from events.flags import FlagChanged, FlagChangeRejected, FlagChangeRequested
from events.gates import GateFailed, GatePassed
from events.incidents import (
    IncidentAcknowledged,
    IncidentDetected,
    IncidentNotified,
    IncidentResolved,
    RollbackRequested,
    RunbookStepFinished,
)
from events.policy import PolicyUpdated
from events.promotions import HoldReleased, PromotionApproved, PromotionBlocked
from events.signals import SignalObserved

EVENT_TYPES: tuple[type[CDEvent], ...] = (
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRejected,
    TestSuiteRunFinished,
    SecurityScanFinished,
    BenchmarkFinished,
    EvidenceRecorded,
    EvidenceRejected,
    PolicyUpdated,
    GatePassed,
    GateFailed,
    PromotionApproved,
    PromotionBlocked,
    ServiceDeployed,
    DeploymentFailed,
    ApprovalUpdated,
    FlagChangeRequested,
    FlagChanged,
    FlagChangeRejected,
    IncidentDetected,
    IncidentResolved,
    IncidentAcknowledged,
    IncidentNotified,
    RollbackRequested,
    RunbookStepFinished,
    ServiceRolledBack,
    HoldReleased,
    SignalObserved,
)


def _index() -> dict[tuple[str, int], type[CDEvent]]:
    index: dict[tuple[str, int], type[CDEvent]] = {}
    for model in EVENT_TYPES:
        parts = split_type(model.TYPE)
        assert parts is not None, model.TYPE
        index[parts] = model
    return index


_BY_NAME_AND_MAJOR = _index()


def model_for(event_type: str) -> type[CDEvent] | None:
    """The model reading ``event_type``. A newer minor or patch version of a known type is read
    by the model we have (versions only add optional fields; unknown fields are ignored)."""
    parts = split_type(event_type)
    return None if parts is None else _BY_NAME_AND_MAJOR.get(parts)


def known_types() -> list[str]:
    return [model.TYPE for model in EVENT_TYPES]
