"""The CDEvents shape every Lockstep event shares: a context, a subject, optional customData.

A CDEvent is the *data* of a CloudEvent. The Kafka record carries the CloudEvent attributes
as ``ce_*`` headers (see ``_envelope``) and this document as its value.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

CDEVENTS_SPEC_VERSION = "0.5.1"

# dev.cdevents.<subject>.<predicate>.<M.m.p>  or  dev.cdeventsx.<tool>-<subject>.<predicate>.<M.m.p>
_TYPE_RE = re.compile(
    r"^(?P<name>dev\.cdevents(?:x)?\.[a-z0-9-]+\.[a-z0-9-]+)\.(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)$"
)


def split_type(event_type: str) -> tuple[str, int] | None:
    """``dev.cdevents.artifact.packaged.0.3.0`` -> (``dev.cdevents.artifact.packaged``, 0)."""
    match = _TYPE_RE.match(event_type)
    if match is None:
        return None
    return match["name"], int(match["major"])


def short_type(event_type: str) -> str:
    """``dev.cdevents.artifact.packaged.0.3.0`` -> ``artifact.packaged``;
    ``dev.cdeventsx.lockstep-gate.passed.0.1.0`` -> ``gate.passed``."""
    parts = event_type.split(".")
    if len(parts) < 4:
        return event_type
    return f"{parts[2].removeprefix('lockstep-')}.{parts[3]}"


def new_event_id() -> str:
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(UTC)


class Model(BaseModel):
    """Base of every wire model: camelCase on the wire, unknown fields ignored
    (docs/architecture.md, "Records"), numbers finite (JSON has no NaN or infinity, and
    Postgres refuses them in jsonb: refused here, at the edge, with the field's path)."""

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, allow_inf_nan=False
    )


MAX_ID_LENGTH = 1024  # ids and sources are keys in Postgres: bounded, and never a NUL

# When an event may say it happened: not before 2000 (no CI system, deployer or alert of
# Lockstep's ran earlier; an earlier time is a zero, an epoch or a typo) and not more than a
# day after now (a day covers any clock skew and time zone mix-up; a later time, such as year
# 9999, would sort after everything and never be "in the past").
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_LEEWAY = timedelta(days=1)


# An RFC 3339 date-time (section 5.6) with its offset; its "T" may be "t" or a space (the
# section's note), and the offset may lack its colon (ISO 8601's basic form, which PagerDuty
# writes). Not a bare number: seconds since the epoch are not an RFC 3339 time.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})", re.ASCII
)
_TIME_EXAMPLE = "2026-05-04T10:00:00Z"


def _shown_time(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 80 else f"{text[:80]}… ({len(text)} characters)"


def _check_time_text(raw: Any) -> Any:
    """``raw`` as it is, unless it is text that is not an RFC 3339 time with its offset, or a
    number; then the error says why (a ``datetime`` passes: it is checked after)."""
    if isinstance(raw, str) and not _RFC3339.fullmatch(raw):
        raise PydanticCustomError(
            "time_format",
            f"{_shown_time(raw)} is not an RFC 3339 time with its offset (e.g. {_TIME_EXAMPLE})",
        )
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raise PydanticCustomError(
            "time_format",
            f"{_shown_time(raw)} is a number, not an RFC 3339 time (e.g. {_TIME_EXAMPLE}); "
            "write the time as text, with its offset",
        )
    return raw


def check_event_time(moment: datetime) -> datetime:
    """``moment`` if it is a time an event can have happened at; else the error says why."""
    if moment < EARLIEST_TIME:
        raise PydanticCustomError(
            "time_out_of_range",
            f"{moment.isoformat()} is before {EARLIEST_TIME.year}; "
            f"give the time the event happened, in RFC 3339 (e.g. {_TIME_EXAMPLE})",
        )
    latest = utc_now() + FUTURE_LEEWAY
    if moment > latest:
        raise PydanticCustomError(
            "time_out_of_range",
            f"{moment.isoformat()} is more than a day in the future (after "
            f"{latest.isoformat(timespec='seconds')}); give the time the event happened, "
            "and check the sender's clock",
        )
    return moment


# The rule for every time an event says something happened at (``context.timestamp``, a
# signal's ``observedAt``), and, through ``parse_event_time``, for the ``ce_time`` header and
# the times webhooks send.
EventTime = Annotated[
    AwareDatetime, BeforeValidator(_check_time_text), AfterValidator(check_event_time)
]
_EVENT_TIME: TypeAdapter[datetime] = TypeAdapter(EventTime)


def parse_event_time(raw: object) -> datetime:
    """``raw`` (RFC 3339 text with its offset) as the time an event happened, by the rule of
    ``EventTime`` (from 2000 to a day from now); else ValueError, whose text says why."""
    try:
        return _EVENT_TIME.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise ValueError(errors[0]["msg"] if errors else str(exc)) from None


# customData is JSON, and says so (CDEvents customDataContentType)
CustomDataIsJson = Annotated[Literal["application/json"], Field(alias="customDataContentType")]


class Context(Model):
    """Every field CDEvents requires is required here too (``new_context`` fills them in)."""

    specversion: str = Field(min_length=1)
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    source: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^\S+$")
    type: str = Field(min_length=1)
    timestamp: EventTime = Field(
        description="When it happened (RFC 3339): from 2000 to at most a day from now"
    )
    schema_uri: str | None = Field(default=None, alias="schemaUri", min_length=1)
    chain_id: str | None = Field(default=None, alias="chainId", min_length=1)


class Reference(Model):
    """A ``{id, source}`` pointer, as CDEvents uses for changes and environments."""

    id: str = Field(min_length=1)
    source: str | None = Field(default=None, min_length=1)


class CDEvent(Model):
    """One event type. Subclasses narrow ``subject`` (and ``custom_data``) and set
    ``TYPE``/``TOPIC``.

    ``TYPE`` is the full versioned type, e.g. ``dev.cdevents.artifact.packaged.0.3.0``.
    ``TOPIC`` is the logical topic (``artifacts``); the namespace prefix is added by settings.
    Defining a subclass that sets ``TYPE`` registers it (``model_for``, ``EVENT_TYPES``).
    """

    TYPE: ClassVar[str]
    TOPIC: ClassVar[str]
    SUMMARY: ClassVar[str] = ""
    HINT: ClassVar[str] = ""  # what a producer most often gets wrong, said with a schema error
    INBOUND: ClassVar[bool] = False  # sent to Lockstep by CI and other tools (else emitted by it)

    context: Context
    subject: Any
    custom_data: Any = Field(default=None, alias="customData")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A class that sets its own ``TYPE`` is an event type: it registers itself (see
        ``events._registry``). A shared base without a ``TYPE`` is not one."""
        super().__pydantic_init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            from events._registry import register  # it imports this module

            register(cls)

    @property
    def id(self) -> str:
        return self.context.id

    @property
    def source(self) -> str:
        return self.context.source

    def partition_key(self) -> str:
        """The record key: the service (component) the event is about, so it stays in order."""
        raise NotImplementedError

    def artifact_label(self) -> str | None:
        """``service@version`` this event is about, if any (used to find a release's trace)."""
        return None

    def describe(self) -> str:
        """One line for people (``lockstep tail``)."""
        return self.SUMMARY

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def new_context(cls, source: str, **extra: Any) -> Context:
        fields = {
            "specversion": CDEVENTS_SPEC_VERSION,
            "id": new_event_id(),
            "timestamp": utc_now(),
            "source": source,
            "type": cls.TYPE,
        }
        return Context.model_validate(fields | extra)
