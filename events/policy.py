"""The release model changed: ``policy.updated`` carries the whole validated model and the
sha256 of the file it came from, which every decision afterwards cites."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from events import topics
from events._base import CDEvent, Model

POLICY_KEY = "release-model"  # one key: every service sees the versions in one order


class PolicyContent(Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the model file's bytes")
    source: str = Field(description="Where the model was read from, e.g. the file's path")
    updated_by: str = Field(alias="updatedBy", min_length=1)
    model: dict[str, Any] = Field(description="The release model, as validated")


class PolicySubject(Model):
    id: str = Field(min_length=1, description="The model's sha256")
    source: str | None = None
    content: PolicyContent


class PolicyUpdated(CDEvent):
    """A new version of the release model is in force."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-policy.updated.0.1.0"
    TOPIC: ClassVar[str] = topics.POLICIES
    SUMMARY: ClassVar[str] = "release model updated"
    INBOUND: ClassVar[bool] = True

    subject: PolicySubject

    def partition_key(self) -> str:
        return POLICY_KEY

    def describe(self) -> str:
        c = self.subject.content
        return f"release model {c.sha256[:12]} from {c.source} by {c.updated_by}"
