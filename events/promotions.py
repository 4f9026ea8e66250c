"""Promotion decisions: ``promotion.approved`` is the one thing deployer agents act on;
``promotion.blocked`` says, for people, what holds a build back."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from events import topics
from events._base import CDEvent, Model


def promotion_id(
    service: str, version: str, digest: str, environment: str, policy_sha256: str
) -> str:
    """Deterministic: the same decision made twice (a redelivery, a restart) has one id."""
    text = f"{service}@{version}/{digest}->{environment}#{policy_sha256}"
    return "prm-" + hashlib.sha256(text.encode()).hexdigest()[:24]


class ApprovedContent(Model):
    promotion_id: str = Field(alias="promotionId")
    service: str
    version: str
    digest: str
    artifact_id: str = Field(alias="artifactId")
    environment: str
    train: str | None = None
    policy_sha256: str = Field(alias="policySha256")
    previous_version: str | None = Field(default=None, alias="previousVersion")
    previous_digest: str | None = Field(default=None, alias="previousDigest")
    rollback: bool = False


class ApprovedSubject(Model):
    id: str = Field(min_length=1, description="The promotion id")
    source: str | None = None
    content: ApprovedContent


class PromotionApproved(CDEvent):
    """Deploy this digest of this service to this environment (deployers act on nothing else)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-promotion.approved.0.1.0"
    TOPIC: ClassVar[str] = topics.PROMOTIONS
    SUMMARY: ClassVar[str] = "promotion approved"

    subject: ApprovedSubject

    def partition_key(self) -> str:
        """A train's promotions share its key, so they reach deployers in the order given
        (dependencies first); any other promotion is keyed by its service."""
        return self.subject.content.train or self.subject.content.service

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.version}"

    def describe(self) -> str:
        c = self.subject.content
        train = f" with train {c.train}" if c.train else ""
        was = f" (replacing {c.previous_version})" if c.previous_version else ""
        return f"PROMOTE {c.service}@{c.version} to {c.environment}{train}{was}"


class HoldView(Model):
    kind: str
    reason: str
    until: datetime | None = None


class BlockedContent(Model):
    service: str
    version: str
    environment: str
    holds: list[HoldView] = Field(min_length=1)
    policy_sha256: str = Field(alias="policySha256")


class BlockedSubject(Model):
    id: str = Field(min_length=1, description="service@version:environment")
    source: str | None = None
    content: BlockedContent


class PromotionBlocked(CDEvent):
    """A build that passed its gate is held back; every hold says why."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-promotion.blocked.0.1.0"
    TOPIC: ClassVar[str] = topics.PROMOTIONS
    SUMMARY: ClassVar[str] = "promotion blocked"

    subject: BlockedSubject

    def partition_key(self) -> str:
        return self.subject.content.service

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.version}"

    def describe(self) -> str:
        c = self.subject.content
        return f"HELD {c.service}@{c.version} for {c.environment}: " + "; ".join(
            h.reason for h in c.holds
        )


class HoldReleasedContent(Model):
    service: str = Field(min_length=1)
    environment: str | None = Field(default=None, description="The incident hold's environment")
    version: str | None = Field(default=None, description="A version marked bad, let through")
    by: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class HoldReleasedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: HoldReleasedContent


class HoldReleased(CDEvent):
    """A person lets promotion go on: a service's incident hold in an environment, or a
    version marked bad by a rollback (an explicit override)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-hold.released.0.1.0"
    TOPIC: ClassVar[str] = topics.PROMOTIONS
    SUMMARY: ClassVar[str] = "hold released"
    INBOUND: ClassVar[bool] = True

    subject: HoldReleasedSubject

    def partition_key(self) -> str:
        return self.subject.content.service

    def describe(self) -> str:
        c = self.subject.content
        what = f"{c.service}@{c.version}" if c.version else f"{c.service} in {c.environment}"
        return f"{c.by} releases the hold on {what}: {c.reason}"
