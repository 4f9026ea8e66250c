"""Security events: what a verifier refused to act on, for people and the audit trail to see.

``signature.refused`` says that a service (or a deployer agent) was handed a decision event
whose signature did not hold (``events.signing``): which service refused, the event's id and
type, the source it claimed, the key it named, why, and where the record was (topic,
partition, offset). The record itself went to the DLQ with the same reason; this event is on
the ``security`` topic, where it can be watched without reading the dead letters.

Its id is derived from the refusing service and the record's position, so a refusal made again
(a redelivery after a crash) is the same event and every inbox skips it."""

from __future__ import annotations

import json
import uuid
from typing import ClassVar

from pydantic import Field

from events import topics
from events._base import CDEvent, Model
from events._envelope import KafkaRecord
from events.signing import SignatureRefused, signature_of

REFUSAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lockstep:security:signature-refused")


class RefusedContent(Model):
    service: str = Field(min_length=1, description="Who refused: a service or deployer agent")
    event_id: str | None = Field(default=None, alias="eventId", description="The refused event's")
    event_type: str | None = Field(default=None, alias="eventType")
    claimed_source: str | None = Field(
        default=None, alias="claimedSource", description="The source the event says it is from"
    )
    key_id: str | None = Field(
        default=None, alias="keyId", description="The key its signature names (none: unsigned)"
    )
    reason: str = Field(
        min_length=1, description="unsigned, malformed, unknown-key, altered, role-not-allowed, "
        "impersonation, retired or revoked (events.signing.REFUSALS)"
    )  # fmt: skip
    detail: str = Field(min_length=1, description="What and why, in words")
    topic: str = Field(min_length=1)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class RefusedSubject(Model):
    id: str = Field(min_length=1, description="The refused event's id (or its record's place)")
    source: str | None = None
    content: RefusedContent


class SignatureRefusal(CDEvent):
    """A service would not act on a decision event: its signature did not hold."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-signature.refused.0.1.0"
    TOPIC: ClassVar[str] = topics.SECURITY
    SUMMARY: ClassVar[str] = "signature refused"

    subject: RefusedSubject

    @classmethod
    def build(
        cls,
        *,
        service: str,
        source: str,
        reason: str,
        detail: str,
        topic: str,
        partition: int,
        offset: int,
        event_id: str | None = None,
        event_type: str | None = None,
        claimed_source: str | None = None,
        key_id: str | None = None,
    ) -> SignatureRefusal:
        """The refusal by ``service`` (its CloudEvents ``source``) of the record at
        ``topic``/``partition``/``offset``; its id is the same each time it is built."""
        place = f"{topic}/{partition}@{offset}"
        refusal_id = str(uuid.uuid5(REFUSAL_NAMESPACE, f"{service}|{place}|{event_id}"))
        return cls(
            context=cls.new_context(source, id=refusal_id),
            subject=RefusedSubject(
                id=event_id or place,
                content=RefusedContent(
                    service=service, event_id=event_id, event_type=event_type,
                    claimed_source=claimed_source, key_id=key_id, reason=reason,
                    detail=detail, topic=topic, partition=partition, offset=offset,
                ),
            ),
        )  # fmt: skip

    @classmethod
    def of(
        cls,
        *,
        service: str,
        source: str,
        record: KafkaRecord,
        event: CDEvent,
        refused: SignatureRefused,
    ) -> SignatureRefusal:
        """The report of ``service``'s refusal of ``event``, read from ``record``."""
        return cls.build(
            service=service, source=source, reason=refused.reason, detail=refused.detail,
            topic=record.topic, partition=max(record.partition, 0),
            offset=max(record.offset, 0), event_id=event.id, event_type=event.context.type,
            claimed_source=event.source, key_id=_named_key(record),
        )  # fmt: skip

    def partition_key(self) -> str:
        return self.subject.content.service

    def describe(self) -> str:
        c = self.subject.content
        what = f"{c.event_type or 'a record'} {c.event_id or ''}".strip()
        return f"{c.service} refused {what}: signature {c.reason}: {c.detail}"


def _named_key(record: KafkaRecord) -> str | None:
    """The key id a record's signature names, if it can be read (else None)."""
    try:
        value = signature_of(record)
        parsed = json.loads(value) if value else None
    except (SignatureRefused, ValueError):
        return None
    found = parsed.get("keyid") if isinstance(parsed, dict) else None
    return found[:64] if isinstance(found, str) else None
