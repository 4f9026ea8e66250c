"""What each audited event says happened, as a ``chain.Fact``: who (the person for a person's
action, the deployer agent for a deployment, the emitting service otherwise, each named by
the event's own field), what, about which service, environment and version. Pure: the
handler passes the event's digest, and where an event names only an incident, the place of
that incident as the service learnt it from ``incident.detected``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from events import (
    ApprovalUpdated,
    ArtifactRef,
    ArtifactRefError,
    CDEvent,
    DeploymentFailed,
    FlagChanged,
    FlagChangeRejected,
    FlagChangeRequested,
    GateFailed,
    GatePassed,
    HoldReleased,
    IncidentAcknowledged,
    IncidentDetected,
    IncidentResolved,
    PolicyUpdated,
    PromotionApproved,
    PromotionBlocked,
    RollbackRequested,
    RunbookStepFinished,
    ServiceDeployed,
    ServiceRolledBack,
    SignatureRefusal,
    short_type,
)
from services.audit.chain import ActorKind, Fact

MAX_DETAIL = 500


@dataclass(frozen=True)
class Place:
    """Where an incident is: its service, environment and version (as detected)."""

    service: str | None
    environment: str | None
    version: str | None


@dataclass(frozen=True)
class _Said:
    actor: str
    kind: ActorKind
    service: str | None = None
    environment: str | None = None
    version: str | None = None
    action: str | None = None  # None: the event's short type
    incident: str | None = None


Reader = Callable[[Any, Place | None], _Said]
R = TypeVar("R", bound=Reader)
_READERS: dict[type[CDEvent], Reader] = {}


def _reads(*models: type[CDEvent]) -> Callable[[R], R]:
    """Register a reader of ``models``: (event, incident's place) -> who, what, where."""

    def register(fn: R) -> R:
        for model in models:
            _READERS[model] = fn
        return fn

    return register


def named(who: str) -> ActorKind:
    """A name in a ``by`` field: Lockstep's own services sign as ``lockstep/<name>`` (or
    ``lockstep <what>``, a drill); anyone else is a person."""
    return "service" if who.startswith(("lockstep/", "lockstep ")) else "person"


def _label(label: str | None) -> tuple[str | None, str | None]:
    if not label:
        return None, None
    try:
        ref = ArtifactRef.parse_label(label)
    except ArtifactRefError:
        return None, None
    return ref.service, ref.version


def fact_of(
    event: CDEvent, digest: str, incident: Place | None = None, *, part_of: str | None = None
) -> Fact:
    """The entry's content for ``event`` (one of ``AUDITED``): ``incident`` is where the
    incident it names is (if known), ``part_of`` the incident it belongs to when the event
    does not name it itself (a flag change made on an incident's request)."""
    said = _READERS[type(event)](event, incident)
    try:
        detail = event.describe()
    except Exception:  # a description is for people; never a reason to lose the entry
        detail = event.SUMMARY
    detail = " ".join(detail.split())
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 1] + "…"
    return Fact(
        occurred_at=event.context.timestamp,
        actor=said.actor,
        actor_kind=said.kind,
        action=said.action or short_type(event.context.type),
        service=said.service,
        environment=said.environment,
        version=said.version,
        subject=str(event.subject.id),
        incident=said.incident or part_of,
        detail=detail,
        event_id=event.id,
        event_source=event.source,
        event_type=event.context.type,
        event_digest=digest,
    )


def incident_place(event: IncidentDetected | IncidentResolved) -> Place:
    facts = event.custom_data
    _, labelled = _label(event.artifact_label())
    version = facts.version if facts is not None and facts.version else labelled
    return Place(event.service_name(), event.subject.content.environment.id, version)


def _at(place: Place | None) -> dict[str, str | None]:
    if place is None:
        return {}
    return {"service": place.service, "environment": place.environment, "version": place.version}


# -- decisions of the services -----------------------------------------------------------------


@_reads(GatePassed, GateFailed)
def _gate(event: GatePassed | GateFailed, _: Place | None) -> _Said:
    c = event.subject.content
    return _Said(event.source, "service", c.service, c.environment, c.version)


@_reads(PromotionApproved)
def _approved(event: PromotionApproved, _: Place | None) -> _Said:
    c = event.subject.content
    action = "promotion.rollback" if c.rollback else None
    return _Said(event.source, "service", c.service, c.environment, c.version, action)


@_reads(PromotionBlocked)
def _blocked(event: PromotionBlocked, _: Place | None) -> _Said:
    c = event.subject.content
    return _Said(event.source, "service", c.service, c.environment, c.version)


@_reads(RollbackRequested)
def _rollback(event: RollbackRequested, _: Place | None) -> _Said:
    c = event.subject.content
    return _Said(event.source, "service", c.service, c.environment, c.bad_version,
                 incident=c.incident_id)  # fmt: skip


@_reads(IncidentDetected)
def _detected(event: IncidentDetected, _: Place | None) -> _Said:
    return _Said(event.source, "service", incident=event.subject.id, **_at(incident_place(event)))


@_reads(FlagChangeRejected)
def _flag_rejected(event: FlagChangeRejected, incident: Place | None) -> _Said:
    return _Said(event.source, "service", **(_at(incident) | {
        "environment": event.subject.content.environment}))  # fmt: skip


# -- what verifiers refused -------------------------------------------------------------------


@_reads(SignatureRefusal)
def _refused(event: SignatureRefusal, _: Place | None) -> _Said:
    """A service (or a deployer agent) would not act on a decision whose signature did not
    hold: the refuser is the actor; the action says why (``signature.refused.<reason>``)."""
    c = event.subject.content
    kind: ActorKind = "agent" if c.service.startswith("deployer/") else "service"
    return _Said(event.source, kind, action=f"signature.refused.{c.reason}")


# -- what deployer agents did ------------------------------------------------------------------


@_reads(ServiceDeployed, ServiceRolledBack)
def _runs(event: ServiceDeployed | ServiceRolledBack, _: Place | None) -> _Said:
    service, version = _label(event.artifact_label())
    return _Said(event.custom_data.agent, "agent", service or event.subject.id,
                 event.subject.content.environment.id, version)  # fmt: skip


@_reads(DeploymentFailed)
def _failed(event: DeploymentFailed, _: Place | None) -> _Said:
    c = event.subject.content
    service, version = _label(event.artifact_label())
    return _Said(c.agent, "agent", service or event.subject.id, c.environment, version)


# -- people's actions (and the services acting in their place) ---------------------------------


@_reads(ApprovalUpdated)
def _approval(event: ApprovalUpdated, _: Place | None) -> _Said:
    t = event.custom_data
    return _Said(event.who, named(event.who), t.service, t.environment, t.version,
                 f"approval.{event.subject.content.decision}")  # fmt: skip


@_reads(HoldReleased)
def _hold(event: HoldReleased, _: Place | None) -> _Said:
    c = event.subject.content
    return _Said(c.by, named(c.by), c.service, c.environment, c.version)


@_reads(PolicyUpdated)
def _policy(event: PolicyUpdated, _: Place | None) -> _Said:
    by = event.subject.content.updated_by
    return _Said(by, named(by))


@_reads(FlagChangeRequested)
def _flag_requested(event: FlagChangeRequested, incident: Place | None) -> _Said:
    c = event.subject.content
    place = _at(incident) if c.incident_id else {}
    return _Said(c.requested_by, named(c.requested_by), incident=c.incident_id,
                 **(place | {"environment": c.environment}))  # fmt: skip


@_reads(FlagChanged)
def _flag_changed(event: FlagChanged, incident: Place | None) -> _Said:
    """A release flag says its release; a flag changed on an incident's request is where the
    incident is."""
    c = event.subject.content
    service, version = _label(_release_of(c.definition) or _release_of(c.previous))
    if service is None and incident is not None:
        service, version = incident.service, incident.version
    return _Said(c.changed_by, named(c.changed_by), service, c.environment, version,
                 f"flag.{c.action}")  # fmt: skip


def _release_of(definition: dict[str, Any] | None) -> str | None:
    """A release flag's ``metadata.release`` (``service@version``), if it has one."""
    metadata = (definition or {}).get("metadata")
    release = metadata.get("release") if isinstance(metadata, dict) else None
    return release if isinstance(release, str) else None


@_reads(IncidentAcknowledged)
def _acknowledged(event: IncidentAcknowledged, incident: Place | None) -> _Said:
    by = event.subject.content.by
    return _Said(by, named(by), incident=event.subject.content.incident_id, **_at(incident))


@_reads(IncidentResolved)
def _resolved(event: IncidentResolved, _: Place | None) -> _Said:
    by = event.custom_data.by if event.custom_data is not None else None
    who, kind = (by, named(by)) if by else (event.source, "service")
    return _Said(who, kind, incident=event.subject.id, **_at(incident_place(event)))


@_reads(RunbookStepFinished)
def _step(event: RunbookStepFinished, incident: Place | None) -> _Said:
    c = event.subject.content
    who, kind = (c.by, named(c.by)) if c.by else (event.source, "service")
    return _Said(who, kind, action=f"runbookstep.{c.outcome}", incident=c.incident_id,
                 **_at(incident))  # fmt: skip


def incident_of(event: CDEvent) -> str | None:
    """The incident an event names without saying where it is (its place is looked up)."""
    if isinstance(event, IncidentAcknowledged | RunbookStepFinished):
        return event.subject.content.incident_id
    if isinstance(event, FlagChangeRequested):
        return event.subject.content.incident_id
    return None


# Every type the service chains: each decision, each deployment and each person's action.
AUDITED: tuple[type[CDEvent], ...] = tuple(_READERS)
