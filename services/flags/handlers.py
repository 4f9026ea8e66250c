"""What the flags service does with events: apply ``flagchange.requested`` (a kill switch from
the incidents service) with the requester recorded, or say why not with
``flagchange.rejected``; halt the rollouts of a service that has an incident."""

from __future__ import annotations

from events.flags import (
    ChangeRejectedContent,
    ChangeRejectedSubject,
    FlagChangeRejected,
    FlagChangeRequested,
)
from events.incidents import IncidentDetected
from services.flags.changes import (
    Change,
    ChangeRefused,
    UnknownFlag,
    apply,
    halt_rollouts_of_service,
)
from services.flags.changes import advance_rollouts as advance_rollouts
from services.flags.definitions import DefinitionError
from shared.bus.handlers import HandlerContext, Router

router = Router()


@router.handles(FlagChangeRequested)
async def on_change_requested(event: FlagChangeRequested, ctx: HandlerContext) -> None:
    c = event.subject.content
    change = Change(
        environment=c.environment,
        flag_key=c.flag_key,
        action=c.action,
        by=c.requested_by,
        reason=c.reason + (f" (incident {c.incident_id})" if c.incident_id else ""),
        source="kafka",
        definition=c.definition,
        request_id=event.id,
    )
    try:
        await apply(ctx, change)
    except (UnknownFlag, ChangeRefused, DefinitionError) as exc:
        ctx.emit(
            FlagChangeRejected(
                context=FlagChangeRejected.new_context("lockstep/flags"),
                subject=ChangeRejectedSubject(
                    id=event.subject.id,
                    content=ChangeRejectedContent(
                        environment=c.environment,
                        flag_key=c.flag_key,
                        action=c.action,
                        requested_by=c.requested_by,
                        request_id=event.id,
                        reason=str(exc),
                    ),
                ),
            )
        )


@router.handles(IncidentDetected)
async def on_incident(event: IncidentDetected, ctx: HandlerContext) -> None:
    service = event.service_name()
    if service is None or (event.custom_data is not None and event.custom_data.drill):
        return  # a drill proves rollback; it says nothing about the release
    environment = event.subject.content.environment.id
    await halt_rollouts_of_service(
        ctx, environment, service, f"incident {event.subject.id} on {service} in {environment}"
    )
