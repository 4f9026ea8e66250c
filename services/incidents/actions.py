"""What the incidents service does, whatever set it off (a signal, a clock, a person):
open an incident (one per dedup key), ask for a rollback, pull kill switches, tell people,
acknowledge and resolve. Each runs in the caller's transaction and emits through its outbox;
an incident's events belong to the trace of the release it is about: the incident's trace
thread (the runtime's, ``store.incident_thread``), begun in the deployment's when it opens."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from events import FlagChangeRequested, IncidentDetected, IncidentResolved, Reference
from events.incidents import (
    AcknowledgedContent,
    AcknowledgedSubject,
    IncidentAcknowledged,
    IncidentContent,
    IncidentFacts,
    IncidentNotified,
    IncidentSubject,
    NotifiedContent,
    NotifiedSubject,
    RollbackContent,
    RollbackRequested,
    RollbackSubject,
)
from policy.model import ReleaseModel, Webhook, parse_duration
from services.incidents import store
from services.incidents.store import Deployment, Incident
from shared.bus.handlers import HandlerContext, Thread
from shared.telemetry import current_trace_headers

SOURCE = "lockstep/incidents"


class NoSuchIncident(LookupError):
    pass


class ActionRefused(ValueError):
    pass


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``Incident.traceparent``: its trace thread's)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


def _attributes(incident: Incident) -> dict[str, str]:
    return {"lockstep.incident": incident.id, "lockstep.service": incident.service,
            "lockstep.environment": incident.environment}  # fmt: skip


def _in_trace(
    ctx: HandlerContext, incident: Incident, name: str
) -> AbstractAsyncContextManager[Thread]:
    """Work about ``incident`` runs in its trace: a span ``name`` of it, linked to the span
    that set the work off (a signal, an acknowledgement, a clock)."""
    return ctx.continuing(
        store.incident_thread(incident.id), f"incidents: {name}", _attributes(incident)
    )


def _facts(incident: Incident, *, by: str | None = None) -> IncidentFacts:
    return IncidentFacts(
        dedup_key=incident.dedup_key, version=incident.version, digest=incident.digest,
        promotion_id=incident.promotion_id, trace_id=trace_id_of(incident.traceparent),
        criterion=incident.criterion, rollback=incident.rollback_at is not None,
        drill=incident.drill, by=by,
    )  # fmt: skip


def _subject(incident: Incident, description: str) -> IncidentSubject:
    return IncidentSubject(
        id=incident.id,
        content=IncidentContent(
            description=description,
            environment=Reference(id=incident.environment),
            service=Reference(id=incident.service),
            artifact_id=incident.purl,
        ),
    )


async def open_incident(
    ctx: HandlerContext,
    model: ReleaseModel | None,
    *,
    dedup_key: str,
    service: str,
    environment: str,
    title: str,
    criterion: str | None,
    deployment: Deployment | None,
    first_signal_at: datetime,
    drill: bool = False,
    count_signal: bool = True,
) -> tuple[Incident, bool]:
    """The open incident with ``dedup_key`` (its signal count moved on, unless the caller
    counted it already), or a new one: then ``incident.detected`` is emitted and the first
    escalation level told. (incident, new)."""
    existing = await store.open_incident_for(ctx.conn, dedup_key)
    if existing is not None:
        if count_signal:
            await store.update(ctx.conn, existing.id, signals=existing.signals + 1)
        return existing, False
    now = ctx.now()
    incident = Incident(
        id=store.new_id(), dedup_key=dedup_key, service=service, environment=environment,
        state="open", title=title, criterion=criterion,
        version=deployment.version if deployment else None,
        digest=deployment.digest if deployment else None,
        purl=deployment.purl if deployment else None,
        promotion_id=deployment.promotion_id if deployment else None,
        traceparent=None, drill=drill, signals=1,
        first_signal_at=first_signal_at, detected_at=now, acknowledged_at=None,
        acknowledged_by=None, rollback_at=None, rolled_back_at=None, rolled_back_to=None,
        resolved_at=None, resolved_by=None, escalation_level=-1,
    )  # fmt: skip
    if not await store.insert(ctx.conn, incident):  # another partition opened it meanwhile
        raced = await store.open_incident_for(ctx.conn, dedup_key)
        assert raced is not None
        return raced, False
    if deployment is not None:
        await store.note(
            ctx.conn, incident.id, deployment.deployed_at, "deployment",
            f"{service}@{deployment.version} deployed to {environment} "
            f"({deployment.promotion_id})",
        )  # fmt: skip
    await store.note(ctx.conn, incident.id, first_signal_at, "first signal", title)
    await store.note(ctx.conn, incident.id, now, "detected", f"incident {incident.id} opened")
    ctx.span.set_attribute("lockstep.incident", incident.id)
    # The incident joins the trace of the deployment it is about (none: the current trace
    # goes on, and the incident has no trace of its own to continue).
    thread = store.incident_thread(incident.id) if deployment is None else deployment.thread
    name = f"incidents: incident detected: {title}"
    async with ctx.continuing(thread, name, _attributes(incident)) as release:
        if release.traceparent is not None:
            await ctx.remember(store.incident_thread(incident.id))
            incident = replace(incident, traceparent=current_trace_headers().get("traceparent"))
        ctx.emit(
            IncidentDetected(
                context=IncidentDetected.new_context(SOURCE),
                subject=_subject(incident, title),
                custom_data=_facts(incident),
            )
        )
    if model is not None and not drill:
        await escalate_to(ctx, model, incident, 0)
    return incident, True


async def request_rollback(
    ctx: HandlerContext, incident: Incident, deployment: Deployment, reason: str
) -> None:
    """Ask the promotion service for the last good version (once per incident)."""
    if incident.rollback_at is not None:
        return
    now = ctx.now()
    await store.update(ctx.conn, incident.id, rollback_at=now)
    await store.note(
        ctx.conn, incident.id, now, "rollback requested",
        f"roll back {incident.service}@{deployment.version} in {incident.environment}: {reason}",
    )  # fmt: skip
    async with _in_trace(ctx, incident, "rollback requested"):
        ctx.emit(
            RollbackRequested(
                context=RollbackRequested.new_context(SOURCE),
                subject=RollbackSubject(
                    id=incident.id,
                    content=RollbackContent(
                        incident_id=incident.id, service=incident.service,
                        environment=incident.environment, bad_version=deployment.version,
                        bad_digest=deployment.digest, reason=reason, drill=incident.drill,
                    ),
                ),
            )
        )  # fmt: skip


async def start_drill(
    ctx: HandlerContext, model: ReleaseModel | None, service: str, environment: str, by: str
) -> Incident:
    """A rollback drill: an incident (marked a drill: it neither marks the version bad nor
    holds promotion) asking to roll back what runs of ``service`` in ``environment``,
    recorded in ``drills`` until its ``service.rolledback`` arrives."""
    deployment = await store.latest_deployment(ctx.conn, service, environment)
    if deployment is None:
        raise ActionRefused(f"nothing of {service} has been deployed to {environment}")
    incident, _ = await open_incident(
        ctx, model, dedup_key=f"drill:{service}/{environment}:{uuid.uuid4().hex[:8]}",
        service=service, environment=environment,
        title=f"rollback drill of {service}@{deployment.version} in {environment} by {by}",
        criterion=None, deployment=deployment, first_signal_at=ctx.now(), drill=True,
    )  # fmt: skip
    await store.record_drill(ctx.conn, incident.id, service, environment, ctx.now())
    await request_rollback(ctx, incident, deployment, f"drill by {by}")
    return incident


async def set_flag(
    ctx: HandlerContext, incident: Incident, flag: str, action: str, why: str
) -> None:
    """Ask the flags service to turn ``flag`` off (or on) in the incident's environment."""
    await store.note(ctx.conn, incident.id, ctx.now(), "flag", f"{action} {flag}: {why}")
    async with _in_trace(ctx, incident, f"{action} flag {flag}"):
        ctx.emit(
            FlagChangeRequested.build(
                environment=incident.environment, flag_key=flag,
                action="disable" if action == "disable" else "enable",
                requested_by=SOURCE, reason=why, incident_id=incident.id, source=SOURCE,
            )
        )  # fmt: skip


def recipients(model: ReleaseModel, service: str, names: list[str]) -> list[str]:
    owner = model.owners.get(service)
    found: list[str] = []
    for name in names:
        if name == "owner":
            found.append(owner.team if owner else f"{service} (no owner in the release model)")
        elif name == "escalation":
            found += owner.escalation if owner and owner.escalation else []
        else:
            found.append(name)
    return list(dict.fromkeys(found))


async def escalate_to(
    ctx: HandlerContext, model: ReleaseModel, incident: Incident, level: int
) -> None:
    """Tell escalation level ``level`` (an event each, and each webhook)."""
    levels = model.escalation.levels
    if level >= len(levels) or level <= incident.escalation_level:
        return
    await store.update(ctx.conn, incident.id, escalation_level=level)
    message = f"{incident.service} in {incident.environment}: {incident.title}"
    for recipient in recipients(model, incident.service, levels[level].notify):
        await notify(ctx, model, incident, level, recipient, message)


async def notify(
    ctx: HandlerContext,
    model: ReleaseModel,
    incident: Incident,
    level: int,
    recipient: str,
    message: str,
    pagerduty_action: str = "trigger",
) -> None:
    now = ctx.now()
    await store.note(
        ctx.conn, incident.id, now, "notified", f"level {level}: {recipient}: {message}"
    )
    async with _in_trace(ctx, incident, f"notify {recipient}"):
        ctx.emit(
            IncidentNotified(
                context=IncidentNotified.new_context(SOURCE),
                subject=NotifiedSubject(
                    id=incident.id,
                    content=NotifiedContent(
                        incident_id=incident.id, level=level, recipient=recipient,
                        message=message,
                    ),
                ),
            )
        )  # fmt: skip
    for hook in model.escalation.webhooks:
        payload = webhook_payload(hook, incident, level, recipient, message, pagerduty_action)
        await store.queue_webhook(ctx.conn, incident.id, str(hook.url), payload, now)


def webhook_payload(
    hook: Webhook, incident: Incident, level: int, recipient: str, message: str, action: str
) -> dict[str, Any]:
    if hook.format == "pagerduty":
        return {
            "routing_key": hook.routing_key,
            "event_action": action,
            "dedup_key": incident.id,
            "payload": {
                "summary": message[:1024],
                "source": f"lockstep/{incident.environment}",
                "severity": "critical",
                "component": incident.service,
                "group": incident.environment,
                "class": incident.criterion or "incident",
                "custom_details": {
                    "incident": incident.id, "version": incident.version,
                    "level": level, "recipient": recipient,
                },
            },
        }  # fmt: skip
    return {
        "incident": incident.id, "state": incident.state, "service": incident.service,
        "environment": incident.environment, "version": incident.version,
        "title": incident.title, "level": level, "recipient": recipient, "message": message,
        "action": action, "traceId": trace_id_of(incident.traceparent),
    }  # fmt: skip


async def acknowledge(
    ctx: HandlerContext, model: ReleaseModel | None, incident_id: str, by: str
) -> Incident:
    incident = await store.get(ctx.conn, incident_id, lock=True)
    if incident is None:
        raise NoSuchIncident(f"no incident {incident_id}")
    if incident.state != "open":
        raise ActionRefused(f"{incident_id} is {incident.state} already")
    now = ctx.now()
    await store.update(ctx.conn, incident_id, state="acknowledged", acknowledged_at=now,
                       acknowledged_by=by)  # fmt: skip
    incident = replace(incident, state="acknowledged", acknowledged_at=now, acknowledged_by=by)
    await store.note(ctx.conn, incident_id, now, "acknowledged", f"by {by}")
    async with _in_trace(ctx, incident, f"acknowledged by {by}"):
        ctx.emit(
            IncidentAcknowledged(
                context=IncidentAcknowledged.new_context(SOURCE),
                subject=AcknowledgedSubject(
                    id=incident_id, content=AcknowledgedContent(incident_id=incident_id, by=by)
                ),
            )
        )
    if model is not None:
        for hook in model.escalation.webhooks:
            payload = webhook_payload(hook, incident, incident.escalation_level, by,
                                      f"acknowledged by {by}", "acknowledge")  # fmt: skip
            await store.queue_webhook(ctx.conn, incident.id, str(hook.url), payload, now)
    return incident


async def resolve(
    ctx: HandlerContext, model: ReleaseModel | None, incident_id: str, by: str, reason: str
) -> Incident:
    """Close the incident: the promotion service lifts its hold on the service there."""
    incident = await store.get(ctx.conn, incident_id, lock=True)
    if incident is None:
        raise NoSuchIncident(f"no incident {incident_id}")
    if incident.state == "resolved":
        raise ActionRefused(f"{incident_id} is resolved already")
    now = ctx.now()
    await store.update(ctx.conn, incident_id, state="resolved", resolved_at=now, resolved_by=by)
    incident = replace(incident, state="resolved", resolved_at=now, resolved_by=by)
    await store.note(ctx.conn, incident_id, now, "resolved", f"by {by}: {reason}")
    await ctx.conn.execute(  # what is left of its runbook will not run
        "UPDATE runbook_runs SET state = 'aborted' WHERE incident_id = $1 "
        "AND state IN ('running', 'paused')",
        incident_id,
    )
    async with _in_trace(ctx, incident, f"resolved by {by}"):
        ctx.emit(
            IncidentResolved(
                context=IncidentResolved.new_context(SOURCE),
                subject=_subject(incident, reason),
                custom_data=_facts(incident, by=by),
            )
        )
    if model is not None:
        for hook in model.escalation.webhooks:
            payload = webhook_payload(hook, incident, incident.escalation_level, by,
                                      f"resolved by {by}: {reason}", "resolve")  # fmt: skip
            await store.queue_webhook(ctx.conn, incident.id, str(hook.url), payload, now)
    return incident


async def escalate_due(ctx: HandlerContext, model: ReleaseModel) -> None:
    """Incidents nobody has acknowledged move up a level when its time comes (the trace
    threads of those that do read in one round trip)."""
    now = ctx.now()

    def due(incident: Incident) -> list[int]:
        return [
            level for level, spec in enumerate(model.escalation.levels)
            if level > incident.escalation_level
            and incident.detected_at + parse_duration(spec.after) <= now
        ]  # fmt: skip

    moving = [(i, due(i)) for i in await store.unacknowledged(ctx.conn) if not i.drill]
    moving = [(incident, levels) for incident, levels in moving if levels]
    await ctx.recall(*(store.incident_thread(incident.id) for incident, _ in moving))
    for incident, levels in moving:
        for level in levels:
            await escalate_to(ctx, model, incident, level)
            incident = await store.get(ctx.conn, incident.id) or incident
