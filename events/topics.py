"""Logical topics (docs/architecture.md). The physical name is ``<namespace>.<topic>``; the default
namespace is ``lockstep``, so ``artifacts`` is the Kafka topic ``lockstep.artifacts``."""

from __future__ import annotations

from typing import Final

DEFAULT_NAMESPACE: Final = "lockstep"

ARTIFACTS: Final = "artifacts"
EVIDENCE: Final = "evidence"
GATES: Final = "gates"
PROMOTIONS: Final = "promotions"
DEPLOYMENTS: Final = "deployments"
FLAGS: Final = "flags"
INCIDENTS: Final = "incidents"
SIGNALS: Final = "signals"
POLICIES: Final = "policies"
SECURITY: Final = "security"
DLQ: Final = "dlq"

ALL: Final[tuple[str, ...]] = (
    ARTIFACTS,
    EVIDENCE,
    GATES,
    PROMOTIONS,
    DEPLOYMENTS,
    FLAGS,
    INCIDENTS,
    SIGNALS,
    POLICIES,
    SECURITY,
    DLQ,
)


# A dead letter keeps the original record and adds headers named with this prefix; the DLQ
# topic takes records up to DLQ_MAX_MESSAGE_BYTES (twice Kafka's default), so any record the
# broker accepted fits with them.
DLQ_HEADER_PREFIX: Final = "lockstep.dlq."
DLQ_MAX_MESSAGE_BYTES: Final = 2 * 1024 * 1024


def physical(namespace: str, topic: str) -> str:
    return f"{namespace}.{topic}"
