"""The release model changed: ``policy.updated`` carries the model file as published (its
text), the sha256 of that text's bytes, which every decision afterwards cites, and the model as
validated.

The hash names the file, and the file is in the event: a ``sha256`` that is not the hash of
``text`` is refused here, when the event is read (dead-lettered at once, nothing retried), and
``policy.in_force.keep`` puts a model in force only if ``text`` also reads, validated, as
the ``model`` carried. Before 1.0.0 the event had no text, and nothing tied the model to the
hash it was cited by: anyone who could write to the topic could put any model in force under
any hash. This is a consistency check, not proof of who published: a writer to the topic can
still hash a file of its own; a platform key's signature (``events.signing``, verified by
every service before the event is handled) is what refuses that."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from events import topics
from events._base import CDEvent, Model

POLICY_KEY = "release-model"  # one key: every service sees the versions in one order


def text_sha256(text: str) -> str | None:
    """The sha256 of ``text``'s UTF-8 bytes (the file's bytes: a file that is not UTF-8 is no
    release model); None for text no file can hold (a lone surrogate, sent as JSON)."""
    try:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:
        return None


class PolicyContent(Model):
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 of the model file's bytes (of `text`)"
    )
    source: str = Field(description="Where the model was read from, e.g. the file's path")
    updated_by: str = Field(alias="updatedBy", min_length=1)
    text: str = Field(
        description="The model file as published, exactly (UTF-8); `sha256` is its hash, and "
        "it must read as `model`"
    )
    model: dict[str, Any] = Field(description="The release model, as validated from `text`")

    @model_validator(mode="after")
    def _text_is_what_the_hash_names(self) -> PolicyContent:
        found = text_sha256(self.text)
        if found is None:
            raise PydanticCustomError(
                "policy_text", "text is not UTF-8 text (a lone surrogate): no file holds it"
            )
        if found != self.sha256:
            raise PydanticCustomError(
                "policy_hash",
                "sha256 {claimed} is not the hash of the text carried (its bytes hash to "
                "{found}); a policy update carries the file its sha256 names",
                {"claimed": self.sha256, "found": found},
            )
        return self


class PolicySubject(Model):
    id: str = Field(min_length=1, description="The model's sha256")
    source: str | None = None
    content: PolicyContent


class PolicyUpdated(CDEvent):
    """A new version of the release model is in force."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-policy.updated.1.0.0"
    TOPIC: ClassVar[str] = topics.POLICIES
    SUMMARY: ClassVar[str] = "release model updated"
    INBOUND: ClassVar[bool] = True

    subject: PolicySubject

    def partition_key(self) -> str:
        return POLICY_KEY

    def describe(self) -> str:
        c = self.subject.content
        return f"release model {c.sha256[:12]} from {c.source} by {c.updated_by}"
