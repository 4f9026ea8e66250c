"""The Lockstep event contract: CloudEvents on Kafka carrying CDEvents.

CI systems and deployer agents in any language validate against the exported JSON Schemas
(``lockstep schema export DIR``); Python code uses these models directly, and tests its own
producers and consumers with the samples in ``events.testing``. ``docs/events.md`` is the
catalogue of every type (``python -m events.catalogue docs/events.md`` rewrites it).

A new event type is a ``CDEvent`` subclass that sets ``TYPE`` and ``TOPIC`` in one of these
modules (it registers itself); import it here so it is loaded and exported, give it a sample
in ``events/testing.py``, and regenerate the catalogue.
"""

from events._artifact_ref import ArtifactRef, ArtifactRefError, check_digest
from events._base import CDEvent, Context, Reference, short_type
from events._envelope import (
    DEFAULT_MAX_EVENT_BYTES,
    Decoded,
    InvalidEvent,
    KafkaRecord,
    decode,
    encode,
    refuse_unstorable,
)
from events._registry import EVENT_TYPES, known_types, model_for
from events.approvals import ApprovalUpdated
from events.artifacts import ArtifactFacts, ArtifactPackaged, ArtifactPublished, ArtifactRejected
from events.deployments import DeploymentFailed, ServiceDeployed, ServiceRolledBack
from events.evidence import (
    BenchmarkFinished,
    Evidence,
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

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_TYPES",
    "ApprovalUpdated",
    "ArtifactFacts",
    "ArtifactPackaged",
    "ArtifactPublished",
    "ArtifactRef",
    "ArtifactRefError",
    "ArtifactRejected",
    "BenchmarkFinished",
    "CDEvent",
    "Context",
    "Decoded",
    "DeploymentFailed",
    "Evidence",
    "EvidenceRecorded",
    "EvidenceRejected",
    "FlagChangeRejected",
    "FlagChangeRequested",
    "FlagChanged",
    "GateFailed",
    "GatePassed",
    "HoldReleased",
    "IncidentAcknowledged",
    "IncidentDetected",
    "IncidentNotified",
    "IncidentResolved",
    "InvalidEvent",
    "KafkaRecord",
    "PolicyUpdated",
    "PromotionApproved",
    "PromotionBlocked",
    "Reference",
    "RollbackRequested",
    "RunbookStepFinished",
    "SecurityScanFinished",
    "ServiceDeployed",
    "ServiceRolledBack",
    "SignalObserved",
    "TestSuiteRunFinished",
    "check_digest",
    "decode",
    "encode",
    "known_types",
    "model_for",
    "refuse_unstorable",
    "short_type",
]
