"""What the incidents service does with events.

- ``signal.observed``: a metric is checked against the release model's rollback criteria; a
  confirmed breach opens an incident (or adds to the open one with its dedup key), pulls the
  criterion's kill switches, starts its runbook, and — within the criterion's window after a
  deployment — asks for a rollback. An alert (Alertmanager, PagerDuty) opens, acknowledges or
  resolves the incident with its dedup key.
- ``service.deployed`` / ``service.rolledback``: what runs where, its trace kept as the
  deployment's trace thread (an incident about it joins that trace); a rollback is noted on
  the incidents that asked for it (and ends a drill).
- ``policy.updated``: the model in force.
- every few seconds: escalation of unacknowledged incidents, and runbooks that wait.
"""

from __future__ import annotations

from events import PolicyUpdated, ServiceDeployed, ServiceRolledBack
from events.signals import SignalObserved
from policy.in_force import in_force, keep
from policy.model import ReleaseModel
from services.incidents import actions, criteria, runbooks, store
from services.incidents.criteria import Streak
from services.incidents.store import Deployment, StreakRow
from shared.bus import HandlerContext, Router

router = Router()


async def model_of(ctx: HandlerContext) -> ReleaseModel | None:
    found = await in_force(ctx.conn)
    return found[1] if found is not None else None


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    c = event.subject.content
    await keep(ctx.conn, c.sha256, c.model, c.updated_by, c.text)


@router.handles(ServiceDeployed, ServiceRolledBack)
async def on_deployed(event: ServiceDeployed | ServiceRolledBack, ctx: HandlerContext) -> None:
    ref = event.ref()
    assert ref.digest is not None
    environment = event.subject.content.environment.id
    rollback = isinstance(event, ServiceRolledBack)
    await store.record_deployment(
        ctx.conn,
        Deployment(
            environment=environment, service=ref.service, version=ref.version,
            digest=ref.digest, purl=event.subject.content.artifact_id,
            promotion_id=event.custom_data.promotion_id, rollback=rollback,
            deployed_at=event.context.timestamp,
        ),
    )  # fmt: skip
    await ctx.remember(store.deployment_thread(ref.service, ref.version, environment))
    if not rollback:
        return
    model = await model_of(ctx)
    for incident in await store.open_for_service(ctx.conn, ref.service, environment):
        if incident.rollback_at is None or incident.rolled_back_at is not None:
            continue
        at = event.context.timestamp
        await store.update(ctx.conn, incident.id, rolled_back_at=at, rolled_back_to=ref.version)
        await store.note(ctx.conn, incident.id, at, "rolled back",
                         f"{ref.label} runs in {environment} again")  # fmt: skip
        ctx.span.set_attribute("lockstep.incident", incident.id)
        if incident.drill:
            await ctx.conn.execute(
                "UPDATE drills SET finished_at = $2, outcome = 'rolled back', detail = $3 "
                "WHERE incident_id = $1",
                incident.id, ctx.now(), f"{ref.label} runs in {environment} again",
            )  # fmt: skip
            await actions.resolve(ctx, model, incident.id, "lockstep drill",
                                  f"drill done: rolled back to {ref.version}")  # fmt: skip


@router.handles(SignalObserved)
async def on_signal(event: SignalObserved, ctx: HandlerContext) -> None:
    c = event.subject.content
    deployment = await store.deployment_at(ctx.conn, c.service, c.environment, c.observed_at)
    await store.record_signal(
        ctx.conn, event_id=event.id, service=c.service, environment=c.environment,
        metric=c.metric, value=c.value, version=deployment.version if deployment else None,
        kind=c.kind, status=c.status, source=c.source, dedup_key=c.dedup_key,
        observed_at=c.observed_at,
    )  # fmt: skip
    model = await model_of(ctx)
    if c.kind == "alert":
        await _alert(ctx, model, event, deployment)
        return
    if c.value is None or model is None:
        return
    # One incident per release in trouble: a new version's breach is a new incident.
    key = c.dedup_key or default_key(c.service, c.environment, deployment)
    counted = False
    for criterion in model.rollback:
        if criterion.metric != c.metric or not criterion.applies_to(c.service, c.environment):
            continue
        baseline = None
        if criterion.relative_to_previous is not None and deployment is not None:
            before = await store.previous_version(ctx.conn, c.service, c.environment, deployment)
            if before is not None:
                baseline = await store.baseline(
                    ctx.conn, c.service, c.environment, c.metric, before
                )
        breaching = criteria.breaches(criterion, c.value, baseline)
        if breaching is None:
            continue  # relative to a previous version that left no measurement
        if breaching and not counted:
            ongoing = await store.open_incident_for(ctx.conn, key)
            if ongoing is not None:  # one more signal of the incident already open
                await store.update(ctx.conn, ongoing.id, signals=ongoing.signals + 1)
                counted = True
        row = await store.get_streak(ctx.conn, criterion.name, c.service, c.environment)
        streak = Streak(row.started_at, row.last_at, row.failures) if row else None
        after, confirmed = criteria.step(criterion, streak, breaching, c.observed_at)
        if not confirmed:
            await store.put_streak(
                ctx.conn, criterion.name, c.service, c.environment,
                StreakRow(after.started_at, after.last_at, after.failures) if after else None,
            )  # fmt: skip
            continue
        assert after is not None
        await store.put_streak(ctx.conn, criterion.name, c.service, c.environment, None)
        title = criteria.describe(criterion, c.value, baseline)
        recent = (
            deployment is not None
            and not deployment.rollback
            and criteria.within_deploy(criterion, deployment.deployed_at, after.started_at)
        )
        incident, new = await actions.open_incident(
            ctx, model, dedup_key=key,
            service=c.service, environment=c.environment, title=title,
            criterion=criterion.name, deployment=deployment, first_signal_at=after.started_at,
            count_signal=not counted,
        )  # fmt: skip
        counted = True
        if new:
            for flag in criterion.kill_switches:
                await actions.set_flag(ctx, incident, flag, "disable", f"kill switch: {title}")
            if criterion.runbook is not None:
                await runbooks.start(ctx, model, incident, criterion.runbook)
        if recent and criterion.rollback and deployment is not None:
            await actions.request_rollback(ctx, incident, deployment, title)
        elif new:
            why = (
                "the criterion does not roll back" if not criterion.rollback
                else f"outside the {criterion.within} after a deployment"
                if deployment is not None and not deployment.rollback
                else "no deployment of Lockstep's to roll back"
            )  # fmt: skip
            await store.note(ctx.conn, incident.id, ctx.now(), "no rollback", why)


def default_key(service: str, environment: str, deployment: Deployment | None) -> str:
    version = deployment.version if deployment is not None else "-"
    return f"{service}/{environment}@{version}"


async def _alert(
    ctx: HandlerContext, model: ReleaseModel | None, event: SignalObserved,
    deployment: Deployment | None,
) -> None:  # fmt: skip
    c = event.subject.content
    key = c.dedup_key or f"alert:{c.service}/{c.environment}/{c.metric}"
    if c.status == "firing":
        title = f"{c.metric}: {c.summary or 'firing'} ({c.source})"
        await actions.open_incident(
            ctx, model, dedup_key=key, service=c.service, environment=c.environment,
            title=title, criterion=None, deployment=deployment, first_signal_at=c.observed_at,
        )  # fmt: skip
        return
    incident = await store.open_incident_for(ctx.conn, key)
    if incident is None:
        return
    if c.status == "acknowledged" and incident.state == "open":
        await actions.acknowledge(ctx, model, incident.id, f"{c.source}")
    elif c.status == "resolved":
        await actions.resolve(ctx, model, incident.id, c.source, f"{c.metric} resolved")


async def periodic(ctx: HandlerContext) -> None:
    model = await model_of(ctx)
    if model is not None:
        await actions.escalate_due(ctx, model)
    await runbooks.advance_all(ctx, model)
