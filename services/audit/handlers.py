"""What the audit service does with each event it consumes: one entry in the chain per
decision, deployment and person's action (``facts.AUDITED``), appended in the batch's
transaction, so an event is in the chain if and only if the inbox has it as handled (a
redelivery is skipped by the inbox before it gets here: once in effect).

``incident.detected`` (and ``incident.resolved``) also say where the incident is, so that an
acknowledgement, a runbook step or a kill switch, which name only the incident, are listed
under its service and environment; a flag change made on an incident's request is part of
that incident. Where the incident's place comes later (another topic, read concurrently), the
entry keeps the incident's id and ``audit show`` finds it through the incident."""

from __future__ import annotations

from events import (
    CDEvent,
    FlagChanged,
    FlagChangeRejected,
    FlagChangeRequested,
    IncidentDetected,
    IncidentResolved,
)
from services.audit import facts, store
from shared.bus import HandlerContext, Router
from shared.bus.consumer import content_digest

router = Router()


@router.handles(*facts.AUDITED)
async def on_event(event: CDEvent, ctx: HandlerContext) -> None:
    place = None
    part_of = None  # the incident a flag change was requested for
    if isinstance(event, IncidentDetected | IncidentResolved):
        place = facts.incident_place(event)
        await store.remember_incident(ctx.conn, event.subject.id, place)
    else:
        if isinstance(event, FlagChangeRequested) and event.subject.content.incident_id:
            await store.remember_request(ctx.conn, event.id, event.subject.content.incident_id)
        if isinstance(event, FlagChanged | FlagChangeRejected) and event.subject.content.request_id:
            # the request is on the same partition (same flag, same key): chained before
            part_of = await store.request_incident(ctx.conn, event.subject.content.request_id)
        incident = facts.incident_of(event) or part_of
        if incident is not None:
            place = await store.incident_place(ctx.conn, incident)
    fact = facts.fact_of(event, content_digest(event), place, part_of=part_of)
    entry = await store.append_fact(ctx.conn, fact, ctx.now())
    ctx.span.set_attribute("lockstep.outcome", f"audit seq {entry.seq}")
