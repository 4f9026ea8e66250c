"""Incidents and what they set off. CDEvents ``incident.detected`` / ``incident.resolved``
carry the environment, the service and the artifact (``customData`` links the deployment,
its trace and the criterion); Lockstep's own types ask for a rollback, tell people, and
record each runbook step."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from events import topics
from events._artifact_ref import ArtifactRef, ArtifactRefError
from events._base import CDEvent, CustomDataIsJson, Model, Reference


class IncidentContent(Model):
    description: str | None = None
    environment: Reference
    service: Reference | None = None
    artifact_id: str | None = Field(default=None, alias="artifactId", min_length=1)


class IncidentSubject(Model):
    id: str = Field(min_length=1, description="The incident's id")
    source: str | None = Field(default=None, min_length=1)
    content: IncidentContent


class IncidentFacts(Model):
    """What Lockstep knows of the incident beyond the CDEvents fields."""

    dedup_key: str = Field(alias="dedupKey")
    version: str | None = None
    digest: str | None = None
    promotion_id: str | None = Field(default=None, alias="promotionId")
    trace_id: str | None = Field(default=None, alias="traceId", description="The release's trace")
    criterion: str | None = None
    rollback: bool = Field(default=False, description="A rollback was asked for")
    drill: bool = False
    by: str | None = Field(default=None, description="Who resolved it (incident.resolved)")


class _IncidentEvent(CDEvent):
    subject: IncidentSubject
    custom_data: IncidentFacts | None = Field(default=None, alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    def service_name(self) -> str | None:
        c = self.subject.content
        if c.service is not None:
            return c.service.id
        label = self.artifact_label()
        return label.split("@", 1)[0] if label else None

    def partition_key(self) -> str:
        return self.service_name() or self.subject.id

    def artifact_label(self) -> str | None:
        if self.subject.content.artifact_id is None:
            return None
        try:
            return ArtifactRef.from_purl(
                self.subject.content.artifact_id, require_digest=False
            ).label
        except ArtifactRefError:
            return None


class IncidentDetected(_IncidentEvent):
    """A problem was detected in a running service in an environment."""

    TYPE: ClassVar[str] = "dev.cdevents.incident.detected.0.3.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "incident detected"
    INBOUND: ClassVar[bool] = True

    def describe(self) -> str:
        c = self.subject.content
        what = self.service_name() or "a service"
        return f"INCIDENT {self.subject.id}: {what} in {c.environment.id}: {c.description or ''}"


class IncidentResolved(_IncidentEvent):
    """The incident is over."""

    TYPE: ClassVar[str] = "dev.cdevents.incident.resolved.0.3.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "incident resolved"
    INBOUND: ClassVar[bool] = True

    def describe(self) -> str:
        c = self.subject.content
        by = f" by {self.custom_data.by}" if self.custom_data and self.custom_data.by else ""
        return f"resolved {self.subject.id} in {c.environment.id}{by}: {c.description or ''}"


class RollbackContent(Model):
    incident_id: str = Field(alias="incidentId", min_length=1)
    service: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    bad_version: str = Field(alias="badVersion", min_length=1)
    bad_digest: str | None = Field(default=None, alias="badDigest")
    reason: str = Field(min_length=1)
    drill: bool = Field(default=False, description="A drill: no hold, the version is not marked")


class RollbackSubject(Model):
    id: str = Field(min_length=1, description="The incident's id")
    source: str | None = None
    content: RollbackContent


class RollbackRequested(CDEvent):
    """Put the last good version of a service back in an environment."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-rollback.requested.0.1.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "rollback requested"
    INBOUND: ClassVar[bool] = True

    subject: RollbackSubject

    def partition_key(self) -> str:
        return self.subject.content.service

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.bad_version}"

    def describe(self) -> str:
        c = self.subject.content
        drill = "DRILL " if c.drill else ""
        return f"{drill}ROLLBACK {c.service}@{c.bad_version} in {c.environment}: {c.reason}"


class NotifiedContent(Model):
    incident_id: str = Field(alias="incidentId")
    level: int = Field(ge=0)
    recipient: str
    message: str


class NotifiedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: NotifiedContent


class IncidentNotified(CDEvent):
    """Someone was told of an incident (an escalation level reached)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-incident.notified.0.1.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "incident notified"

    subject: NotifiedSubject

    def partition_key(self) -> str:
        return self.subject.content.incident_id

    def describe(self) -> str:
        c = self.subject.content
        return f"{c.incident_id}: told {c.recipient} (level {c.level}): {c.message}"


class AcknowledgedContent(Model):
    incident_id: str = Field(alias="incidentId")
    by: str


class AcknowledgedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: AcknowledgedContent


class IncidentAcknowledged(CDEvent):
    """A responder took the incident: escalation stops."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-incident.acknowledged.0.1.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "incident acknowledged"

    subject: AcknowledgedSubject

    def partition_key(self) -> str:
        return self.subject.content.incident_id

    def describe(self) -> str:
        c = self.subject.content
        return f"{c.incident_id} acknowledged by {c.by}"


StepOutcome = Literal["done", "paused", "continued", "aborted", "failed"]


class StepContent(Model):
    incident_id: str = Field(alias="incidentId")
    runbook: str
    step: str
    index: int = Field(ge=0)
    outcome: StepOutcome
    detail: str = ""
    by: str | None = None


class StepSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: StepContent


class RunbookStepFinished(CDEvent):
    """A runbook step ran (or paused for a person, or was continued or aborted by one)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-runbookstep.finished.0.1.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "runbook step"

    subject: StepSubject

    def partition_key(self) -> str:
        return self.subject.content.incident_id

    def describe(self) -> str:
        c = self.subject.content
        by = f" by {c.by}" if c.by else ""
        return f"{c.incident_id} runbook {c.runbook} step {c.index + 1} {c.step!r}: {c.outcome}{by}"
