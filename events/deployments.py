"""Deployments, as deployer agents report them: CDEvents ``service.deployed`` (the
artifact now runs in the environment) and Lockstep's ``deployment.failed``. Both name the
promotion they act on in ``customData.promotionId``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from events import topics
from events._artifact_ref import ArtifactRef, ArtifactRefError, service_of
from events._base import CDEvent, CustomDataIsJson, Model, Reference


class DeployedContent(Model):
    environment: Reference
    artifact_id: str = Field(alias="artifactId", min_length=1)


class DeployedSubject(Model):
    id: str = Field(min_length=1, description="The service (component) deployed")
    source: str | None = None
    content: DeployedContent


class DeploymentFacts(Model):
    promotion_id: str = Field(alias="promotionId", min_length=1)
    agent: str = Field(min_length=1, description="The deployer agent that acted")


class _RunsIn(CDEvent):
    """An artifact runs in an environment, as a deployer agent reports it."""

    subject: DeployedSubject
    custom_data: DeploymentFacts = Field(alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    def ref(self) -> ArtifactRef:
        return ArtifactRef.from_purl(self.subject.content.artifact_id, require_digest=True)

    def partition_key(self) -> str:
        return service_of(self.subject.content.artifact_id) or self.subject.id

    def artifact_label(self) -> str | None:
        try:
            return self.ref().label
        except ArtifactRefError:
            return None


class ServiceDeployed(_RunsIn):
    """An artifact now runs in an environment."""

    TYPE: ClassVar[str] = "dev.cdevents.service.deployed.0.3.0"
    TOPIC: ClassVar[str] = topics.DEPLOYMENTS
    SUMMARY: ClassVar[str] = "service deployed"
    INBOUND: ClassVar[bool] = True

    def describe(self) -> str:
        return f"{self.artifact_label()} runs in {self.subject.content.environment.id}"


class ServiceRolledBack(_RunsIn):
    """An environment runs an earlier artifact again, after a rollback promotion."""

    TYPE: ClassVar[str] = "dev.cdevents.service.rolledback.0.3.0"
    TOPIC: ClassVar[str] = topics.DEPLOYMENTS
    SUMMARY: ClassVar[str] = "service rolled back"
    INBOUND: ClassVar[bool] = True

    def describe(self) -> str:
        return f"ROLLED BACK: {self.artifact_label()} runs in {self.subject.content.environment.id}"


class FailedContent(Model):
    environment: str
    artifact_id: str = Field(alias="artifactId")
    promotion_id: str = Field(alias="promotionId")
    agent: str
    reason: str


class FailedSubject(Model):
    id: str = Field(min_length=1, description="The service (component)")
    source: str | None = None
    content: FailedContent


class DeploymentFailed(CDEvent):
    """A deployer agent could not carry out a promotion; the reason says why."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-deployment.failed.0.1.0"
    TOPIC: ClassVar[str] = topics.DEPLOYMENTS
    SUMMARY: ClassVar[str] = "deployment failed"
    INBOUND: ClassVar[bool] = True

    subject: FailedSubject

    def partition_key(self) -> str:
        return service_of(self.subject.content.artifact_id) or self.subject.id

    def artifact_label(self) -> str | None:
        try:
            return ArtifactRef.from_purl(
                self.subject.content.artifact_id, require_digest=False
            ).label
        except ArtifactRefError:
            return None

    def describe(self) -> str:
        c = self.subject.content
        return f"FAILED to deploy {self.artifact_label()} to {c.environment}: {c.reason}"
