"""Feature-flag events. ``flagchange.requested`` asks the flags service to change a flag
(the incidents service sends it to pull a kill switch); ``flag.changed`` records a change
that was made, with the definition before and after; ``flagchange.rejected`` says why a
request was not applied. A flag is named ``<environment>/<flag key>``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from events import topics
from events._base import CDEvent, Model

RequestedAction = Literal["enable", "disable", "set", "halt-rollout"]
ChangeAction = Literal["set", "enable", "disable", "rollout", "halt-rollout", "delete"]
ChangeSource = Literal["cli", "api", "kafka", "rollout"]


def flag_subject_id(environment: str, flag_key: str) -> str:
    return f"{environment}/{flag_key}"


class ChangeRequestedContent(Model):
    environment: str = Field(min_length=1)
    flag_key: str = Field(alias="flagKey", min_length=1)
    action: RequestedAction
    definition: dict[str, Any] | None = Field(
        default=None, description="For `set`: the whole flagd flag definition"
    )
    requested_by: str = Field(alias="requestedBy", min_length=1)
    reason: str = Field(min_length=1)
    incident_id: str | None = Field(default=None, alias="incidentId", min_length=1)


class ChangeRequestedSubject(Model):
    id: str = Field(min_length=1, description="<environment>/<flag key>")
    source: str | None = None
    content: ChangeRequestedContent


class FlagChangeRequested(CDEvent):
    """Someone (a person, or the incidents service) asks for a flag to change."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-flagchange.requested.0.1.0"
    TOPIC: ClassVar[str] = topics.FLAGS
    SUMMARY: ClassVar[str] = "flag change requested"
    HINT: ClassVar[str] = (
        "subject.content needs environment, flagKey, action (enable|disable|set|halt-rollout), "
        "requestedBy and reason; `set` also needs the flagd definition"
    )
    INBOUND: ClassVar[bool] = True

    subject: ChangeRequestedSubject

    @classmethod
    def build(
        cls,
        *,
        environment: str,
        flag_key: str,
        action: RequestedAction,
        requested_by: str,
        reason: str,
        definition: dict[str, Any] | None = None,
        incident_id: str | None = None,
        source: str = "lockstep/cli",
    ) -> FlagChangeRequested:
        return cls(
            context=cls.new_context(source),
            subject=ChangeRequestedSubject(
                id=flag_subject_id(environment, flag_key),
                content=ChangeRequestedContent(
                    environment=environment,
                    flag_key=flag_key,
                    action=action,
                    definition=definition,
                    requested_by=requested_by,
                    reason=reason,
                    incident_id=incident_id,
                ),
            ),
        )

    def partition_key(self) -> str:
        return self.subject.id

    def describe(self) -> str:
        c = self.subject.content
        return f"{c.requested_by} asks to {c.action} {self.subject.id}: {c.reason}"


class ChangedContent(Model):
    environment: str
    flag_key: str = Field(alias="flagKey")
    version: int = Field(ge=1, description="The flag's version after this change")
    action: ChangeAction
    changed_by: str = Field(alias="changedBy")
    reason: str
    source: ChangeSource
    definition: dict[str, Any] | None = Field(
        default=None, description="After the change (absent: deleted)"
    )
    previous: dict[str, Any] | None = Field(
        default=None, description="Before the change (absent: a new flag)"
    )
    request_id: str | None = Field(
        default=None, alias="requestId", description="The flag.change.requested applied"
    )


class ChangedSubject(Model):
    id: str = Field(min_length=1, description="<environment>/<flag key>")
    source: str | None = None
    content: ChangedContent


class FlagChanged(CDEvent):
    """A flag changed: who, when, why, and the definition before and after."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-flag.changed.0.1.0"
    TOPIC: ClassVar[str] = topics.FLAGS
    SUMMARY: ClassVar[str] = "flag changed"

    subject: ChangedSubject

    def partition_key(self) -> str:
        return self.subject.id

    def describe(self) -> str:
        c = self.subject.content
        return f"{self.subject.id} v{c.version}: {c.action} by {c.changed_by} ({c.reason})"


class ChangeRejectedContent(Model):
    environment: str
    flag_key: str = Field(alias="flagKey")
    action: str
    requested_by: str = Field(alias="requestedBy")
    request_id: str = Field(alias="requestId")
    reason: str


class ChangeRejectedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: ChangeRejectedContent


class FlagChangeRejected(CDEvent):
    """A requested change was not applied; the reason names the problem."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-flagchange.rejected.0.1.0"
    TOPIC: ClassVar[str] = topics.FLAGS
    SUMMARY: ClassVar[str] = "flag change rejected"

    subject: ChangeRejectedSubject

    def partition_key(self) -> str:
        return self.subject.id

    def describe(self) -> str:
        c = self.subject.content
        return f"REJECTED {c.action} of {self.subject.id} for {c.requested_by}: {c.reason}"
