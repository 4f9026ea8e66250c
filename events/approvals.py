"""A person's decision on a build going to an environment, in the shape of the CDEvents
draft ``approval.updated`` (one event per approver). ``customData`` says which build and
environment, so the gates service need not parse URLs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from events import topics
from events._base import CDEvent, CustomDataIsJson, Model

Decision = Literal["escalated", "delegate", "deferred", "requestChanges", "approved", "rejected"]


class ApprovalContent(Model):
    approval_details_url: str = Field(alias="approvalDetailsUrl", min_length=1)
    resource_target_url: str = Field(alias="resourceTargetUrl", min_length=1)
    responder: str = Field(
        min_length=1, description="A URN naming who decided, e.g. urn:lockstep:user:alice"
    )
    decision: Decision


class ApprovalSubject(Model):
    id: str = Field(min_length=1, description="service@version:environment")
    source: str | None = None
    content: ApprovalContent


class ApprovalTarget(Model):
    service: str
    version: str
    environment: str


class ApprovalUpdated(CDEvent):
    """Someone approved (or rejected) a build for an environment."""

    TYPE: ClassVar[str] = "dev.cdevents.approval.updated.0.1.0"
    TOPIC: ClassVar[str] = topics.GATES
    SUMMARY: ClassVar[str] = "approval decided"
    INBOUND: ClassVar[bool] = True

    subject: ApprovalSubject
    custom_data: ApprovalTarget = Field(alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    @classmethod
    def build(
        cls, *, service: str, version: str, environment: str, by: str, decision: Decision,
        source: str = "lockstep/cli",
    ) -> ApprovalUpdated:  # fmt: skip
        label = f"{service}@{version}"
        return cls(
            context=cls.new_context(source),
            subject=ApprovalSubject(
                id=f"{label}:{environment}",
                content=ApprovalContent(
                    approval_details_url=f"urn:lockstep:approval:{label}:{environment}",
                    resource_target_url=f"pkg:generic/{service}@{version}",
                    responder=f"urn:lockstep:user:{by}",
                    decision=decision,
                ),
            ),
            custom_data=ApprovalTarget(service=service, version=version, environment=environment),
        )

    @property
    def who(self) -> str:
        return self.subject.content.responder.removeprefix("urn:lockstep:user:")

    def partition_key(self) -> str:
        return self.custom_data.service

    def artifact_label(self) -> str | None:
        return f"{self.custom_data.service}@{self.custom_data.version}"

    def describe(self) -> str:
        t = self.custom_data
        decision = self.subject.content.decision
        return f"{self.who} {decision} {t.service}@{t.version} for {t.environment}"


class RefusedApprovalContent(Model):
    who: str = Field(min_length=1, description="Who decided, as their key says")
    decision: Decision
    reason: str = Field(description="Why the gate does not count it, and what would")
    refused_event_id: str = Field(alias="refusedEventId", description="The approval.updated")
    policy_sha256: str = Field(alias="policySha256", description="The model that refused it")


class RefusedApprovalSubject(Model):
    id: str = Field(min_length=1, description="service@version:environment")
    source: str | None = None
    content: RefusedApprovalContent


class ApprovalRefused(CDEvent):
    """A person's approval (or rejection) that the gate does not count: they are not among its
    approvers, or they authored the change and the gate needs four eyes. It stays on record
    and counts if a later model lets them decide."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-approval.refused.0.1.0"
    TOPIC: ClassVar[str] = topics.GATES
    SUMMARY: ClassVar[str] = "approval not counted"

    subject: RefusedApprovalSubject
    custom_data: ApprovalTarget = Field(alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    def partition_key(self) -> str:
        return self.custom_data.service

    def artifact_label(self) -> str | None:
        return f"{self.custom_data.service}@{self.custom_data.version}"

    def describe(self) -> str:
        return f"NOT COUNTED: {self.subject.content.reason}"
