"""Artifact events: a build from CI (CDEvents ``artifact.packaged``), its registration
(CDEvents ``artifact.published``) and a refusal (Lockstep's ``artifact.rejected``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from events import topics
from events._artifact_ref import (
    ArtifactRef,
    ArtifactRefError,
    check_digest,
    check_service,
    check_version,
    service_of,
)
from events._base import CDEvent, CustomDataIsJson, Model, Reference


class SbomRef(Model):
    uri: str = Field(min_length=1)


class PackagedContent(Model):
    change: Reference
    sbom: SbomRef | None = None


# In an ``artifact.packaged``'s customData (which is otherwise the producer's own, kept as
# sent), Lockstep reads ``{"lockstep": {"author": "<person>"}}``: who made the change, by the
# name people approve with; a gate with four_eyes does not count that person's approval.
AUTHOR_MAX_CHARS = 200


class PackagedSubject(Model):
    id: str = Field(min_length=1, description="The artifact's purl, carrying its sha256 digest")
    source: str | None = Field(default=None, min_length=1)
    content: PackagedContent


class ArtifactPackaged(CDEvent):
    """CI built an artifact. ``subject.id`` is its purl; ``content.change.id`` is the commit;
    ``customData.lockstep.author``, if CI says, who made the change (a four-eyes gate does
    not count their approval). The rest of ``customData`` is the producer's own."""

    TYPE: ClassVar[str] = "dev.cdevents.artifact.packaged.0.3.0"
    TOPIC: ClassVar[str] = topics.ARTIFACTS
    SUMMARY: ClassVar[str] = "CI packaged an artifact"
    INBOUND: ClassVar[bool] = True

    subject: PackagedSubject

    @classmethod
    def build(
        cls,
        *,
        service: str,
        version: str,
        digest: str,
        commit: str,
        source: str = "lockstep/cli",
        repo: str | None = None,
        sbom_uri: str | None = None,
        author: str | None = None,
    ) -> ArtifactPackaged:
        """The event a CI system publishes for a build; checks the digest, service and version."""
        ref = ArtifactRef(check_service(service), check_version(version), check_digest(digest))
        return cls(
            context=cls.new_context(source),
            subject=PackagedSubject(
                id=ref.purl(),
                content=PackagedContent(
                    change=Reference(id=commit, source=repo),
                    sbom=SbomRef(uri=sbom_uri) if sbom_uri else None,
                ),
            ),
            custom_data=None if author is None else {"lockstep": {"author": _author(author)}},
        )

    @property
    def author(self) -> str | None:
        """Who made the change, if the producer said (``customData.lockstep.author``); a value
        that is not a name is not one, and the build counts as one whose author is unknown."""
        ours = self.custom_data.get("lockstep") if isinstance(self.custom_data, dict) else None
        said = ours.get("author") if isinstance(ours, dict) else None
        if isinstance(said, str) and 0 < len(said.strip()) <= AUTHOR_MAX_CHARS:
            return said.strip()
        return None

    def ref(self) -> ArtifactRef:
        """The artifact it names; ArtifactRefError if the purl lacks a digest or version."""
        return ArtifactRef.from_purl(self.subject.id, require_digest=True)

    def partition_key(self) -> str:
        return _service_or_unknown(self.subject.id)

    def artifact_label(self) -> str | None:
        try:
            return ArtifactRef.from_purl(self.subject.id, require_digest=False).label
        except ArtifactRefError:
            return None

    def describe(self) -> str:
        return f"packaged {self.subject.id} from change {self.subject.content.change.id}"


class ArtifactFacts(Model):
    """What Lockstep knows of a registered artifact (``customData`` of ``artifact.published``)."""

    service: str
    version: str
    digest: str
    commit: str
    commit_source: str | None = Field(default=None, alias="commitSource")
    packaged_event_id: str = Field(alias="packagedEventId")
    author: str | None = Field(
        default=None, min_length=1, description="Who made the change, as CI said (if it did)"
    )


class PublishedContent(Model):
    sbom: SbomRef | None = None
    user: str | None = Field(default=None, min_length=1)


class PublishedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = Field(default=None, min_length=1)
    content: PublishedContent = PublishedContent()


class ArtifactPublished(CDEvent):
    """Lockstep registered the artifact: (service, version) is now bound to its digest."""

    TYPE: ClassVar[str] = "dev.cdevents.artifact.published.0.3.0"
    TOPIC: ClassVar[str] = topics.ARTIFACTS
    SUMMARY: ClassVar[str] = "artifact registered"

    subject: PublishedSubject
    custom_data: ArtifactFacts = Field(alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    def partition_key(self) -> str:
        return self.custom_data.service

    def artifact_label(self) -> str | None:
        return f"{self.custom_data.service}@{self.custom_data.version}"

    def describe(self) -> str:
        f = self.custom_data
        return f"registered {f.service}@{f.version} {f.digest[:19]}… commit {f.commit[:12]}"


RejectionCode = Literal[
    "conflicting_digest",
    "missing_digest",
    "invalid_digest",
    "missing_version",
    "invalid_version",
    "invalid_service",
    "invalid_purl",
]


class RejectedContent(Model):
    code: RejectionCode
    reason: str = Field(description="What happened and what to do next")
    service: str | None = None
    version: str | None = None
    digest: str | None = None
    registered_digest: str | None = Field(default=None, alias="registeredDigest")
    rejected_event_id: str = Field(alias="rejectedEventId")


class RejectedSubject(Model):
    id: str = Field(min_length=1, description="The purl as the producer sent it")
    source: str | None = None
    content: RejectedContent


class ArtifactRejected(CDEvent):
    """Lockstep refused an ``artifact.packaged``: the reason names the problem and the fix."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-artifact.rejected.0.1.0"
    TOPIC: ClassVar[str] = topics.ARTIFACTS
    SUMMARY: ClassVar[str] = "artifact rejected"

    subject: RejectedSubject

    def partition_key(self) -> str:
        return self.subject.content.service or _service_or_unknown(self.subject.id)

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.version}" if c.service and c.version else None

    def describe(self) -> str:
        return f"REJECTED {self.subject.id}: {self.subject.content.reason}"


def _author(name: str) -> str:
    if not 0 < len(name.strip()) <= AUTHOR_MAX_CHARS:
        raise ValueError(f"an author is 1 to {AUTHOR_MAX_CHARS} characters")
    return name.strip()


def _service_or_unknown(purl: str) -> str:
    return service_of(purl) or "unknown"
