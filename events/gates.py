"""Gate decisions: a build judged against the gate of one environment (``gate.passed`` for a
pass or a warning, ``gate.failed`` for a fail), with every criterion's verdict, what it
measured, and the sha256 of the release model that made the decision."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from events import topics
from events._base import CDEvent, Model


class CriterionVerdict(Model):
    criterion: str
    verdict: Literal["pass", "warning", "fail", "pending"]
    key: bool
    weight: float
    measured: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class GateDecisionContent(Model):
    service: str
    version: str
    digest: str
    artifact_id: str = Field(alias="artifactId")
    environment: str
    result: Literal["pass", "warning", "fail"]
    score: float
    criteria: list[CriterionVerdict]
    conditions: list[CriterionVerdict]
    policy_sha256: str = Field(alias="policySha256")
    evidence_ids: list[str] = Field(alias="evidenceIds")


class GateSubject(Model):
    id: str = Field(min_length=1, description="service@version:environment")
    source: str | None = None
    content: GateDecisionContent


class _GateDecision(CDEvent):
    TOPIC: ClassVar[str] = topics.GATES
    subject: GateSubject

    def partition_key(self) -> str:
        return self.subject.content.service

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.version}"

    def describe(self) -> str:
        c = self.subject.content
        failing = [
            f"{v.criterion}: {v.reason}" for v in c.criteria if v.verdict in ("fail", "warning")
        ]
        tail = f" ({'; '.join(failing)})" if failing else ""
        return (
            f"gate {c.environment} {c.result.upper()} for {c.service}@{c.version}, score "
            f"{c.score:g}, model {c.policy_sha256[:12]}{tail}"
        )


class GatePassed(_GateDecision):
    """The build may go to the environment as far as its gate is concerned."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-gate.passed.0.1.0"
    SUMMARY: ClassVar[str] = "gate passed"


class GateFailed(_GateDecision):
    """The build may not go to the environment: the verdicts say why."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-gate.failed.0.1.0"
    SUMMARY: ClassVar[str] = "gate failed"
