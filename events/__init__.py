"""The Lockstep event contract: CloudEvents on Kafka carrying CDEvents.

CI systems and deployer agents in any language validate against the exported JSON Schemas
(``lockstep schema export DIR``); Python code uses these models directly, and tests its own
producers and consumers with the samples in ``events.testing``. ``docs/events.md`` is the
catalogue of every type (``python -m events.catalogue docs/events.md`` rewrites it).

A new event type is a ``CDEvent`` subclass that sets ``TYPE`` and ``TOPIC`` in one of these
modules (it registers itself); import it here so it is loaded and exported, give it a sample
in ``events/testing.py``, and regenerate the catalogue.

Reading the topics with aiokafka so that no record stops the reader (``SafeFetcher``,
``fetch_safely``) and writing dead letters (``dead_letter``, ``reason_of``) are in
``events.kafka``, the one module that imports aiokafka; it is loaded when one of those names
is first used, so ``import events`` does not load the Kafka client.
"""

from typing import TYPE_CHECKING, Any

from events._artifact_ref import ArtifactRef, ArtifactRefError, check_digest
from events._base import CDEvent, Context, Reference, parse_event_time, short_type
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
from events.approvals import ApprovalRefused, ApprovalUpdated
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
from events.security import SignatureRefusal
from events.signals import SignalObserved

if TYPE_CHECKING:
    from events import kafka as kafka
    from events.kafka import (
        PartitionBatch,
        SafeFetcher,
        Unreadable,
        dead_letter,
        fetch_safely,
        reason_of,
    )

_FROM_KAFKA = ("PartitionBatch", "SafeFetcher", "Unreadable", "dead_letter", "fetch_safely",
               "reason_of")  # fmt: skip


def __getattr__(name: str) -> Any:
    """The names of ``events.kafka``, imported (with aiokafka) only when first asked for."""
    if name == "kafka" or name in _FROM_KAFKA:
        import importlib

        module = importlib.import_module("events.kafka")
        return module if name == "kafka" else getattr(module, name)
    raise AttributeError(f"module 'events' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EVENT_TYPES",
    "ApprovalRefused",
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
    "PartitionBatch",
    "PolicyUpdated",
    "PromotionApproved",
    "PromotionBlocked",
    "Reference",
    "RollbackRequested",
    "RunbookStepFinished",
    "SafeFetcher",
    "SecurityScanFinished",
    "ServiceDeployed",
    "ServiceRolledBack",
    "SignalObserved",
    "SignatureRefusal",
    "TestSuiteRunFinished",
    "Unreadable",
    "check_digest",
    "dead_letter",
    "decode",
    "encode",
    "fetch_safely",
    "known_types",
    "model_for",
    "parse_event_time",
    "reason_of",
    "refuse_unstorable",
    "short_type",
]
