"""Incidents: CDEvents ``incident.detected``. The incidents service emits it; the flags
service halts gradual rollouts of the service it names in that environment."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events import topics
from events._artifact_ref import ArtifactRef, ArtifactRefError
from events._base import CDEvent, Model, Reference


class IncidentContent(Model):
    description: str | None = None
    environment: Reference
    service: Reference | None = None
    artifact_id: str | None = Field(default=None, alias="artifactId", min_length=1)


class IncidentSubject(Model):
    id: str = Field(min_length=1, description="The incident's id")
    source: str | None = Field(default=None, min_length=1)
    content: IncidentContent


class IncidentDetected(CDEvent):
    """A problem was detected in a running service in an environment."""

    TYPE: ClassVar[str] = "dev.cdevents.incident.detected.0.3.0"
    TOPIC: ClassVar[str] = topics.INCIDENTS
    SUMMARY: ClassVar[str] = "incident detected"
    INBOUND: ClassVar[bool] = True

    subject: IncidentSubject

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

    def describe(self) -> str:
        c = self.subject.content
        what = self.service_name() or "a service"
        return f"incident {self.subject.id}: {what} in {c.environment.id}: {c.description or ''}"
