"""What the promotion service does.

- ``gate.passed`` / ``gate.failed``: a build becomes (or stops being) a candidate for an
  environment, and the environment is looked at again.
- ``service.deployed`` / ``deployment.failed``: the ledger of what runs where; the next
  environments, and whatever depends on the service, are looked at again.
- ``policy.updated``: the model in force; every waiting candidate is looked at again.
- every few seconds: candidates whose window opens (or closes) are looked at again.

Looking at (service, environment): the newest waiting build is promoted unless something
holds it, and older waiting builds are superseded. A hold is told once
(``promotion.blocked``) and again only when the reasons change.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from opentelemetry.trace import SpanKind
from packaging.version import InvalidVersion, Version

from events import (
    ArtifactRef,
    DeploymentFailed,
    GateFailed,
    GatePassed,
    HoldReleased,
    IncidentResolved,
    PolicyUpdated,
    PromotionApproved,
    PromotionBlocked,
    RollbackRequested,
    ServiceDeployed,
    ServiceRolledBack,
)
from events.promotions import (
    ApprovedContent,
    ApprovedSubject,
    BlockedContent,
    BlockedSubject,
    HoldView,
    promotion_id,
)
from policy.in_force import in_force, keep
from policy.model import ReleaseModel, Train
from services.promotion import holds as rules
from services.promotion import store
from shared.bus import HandlerContext, Router
from shared.telemetry import context_from_headers, current_trace_headers, in_trace_of

SOURCE = "lockstep/promotion"

router = Router()


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    content = event.subject.content
    await keep(ctx.conn, content.sha256, content.model, content.updated_by)
    for service, environment in await store.waiting_pairs(ctx.conn):
        await look_at(ctx, service, environment)


@router.handles(GatePassed, GateFailed)
async def on_gate(event: GatePassed | GateFailed, ctx: HandlerContext) -> None:
    c = event.subject.content
    await store.lock_environment(ctx.conn, c.environment)
    await store.upsert_candidate(
        ctx.conn, service=c.service, version=c.version, environment=c.environment,
        digest=c.digest, purl=c.artifact_id,
        state="waiting" if isinstance(event, GatePassed) else "gate-failed",
        traceparent=current_trace_headers().get("traceparent"), at=ctx.now(),
    )  # fmt: skip
    await look_at(ctx, c.service, c.environment)
    model = await _model_in_force(ctx)
    train = rules.train_of(model, c.service, c.environment) if model is not None else None
    for member in train.services if train is not None else []:
        if member != c.service:  # the others wait on this one: tell them where it stands
            await look_at(ctx, member, c.environment)


@router.handles(ServiceDeployed, ServiceRolledBack)
async def on_deployed(event: ServiceDeployed | ServiceRolledBack, ctx: HandlerContext) -> None:
    ref = event.ref()
    environment = event.subject.content.environment.id
    assert ref.digest is not None
    await store.lock_environment(ctx.conn, environment)
    await store.record_deployment(
        ctx.conn, environment=environment, service=ref.service, version=ref.version,
        digest=ref.digest, promotion_id=event.custom_data.promotion_id, at=event.context.timestamp,
    )  # fmt: skip
    await store.record_history(
        ctx.conn, environment=environment, service=ref.service, version=ref.version,
        digest=ref.digest, promotion_id=event.custom_data.promotion_id,
        rollback=isinstance(event, ServiceRolledBack), at=event.context.timestamp,
    )  # fmt: skip
    if isinstance(event, ServiceRolledBack):
        return  # a rollback moves nothing onward
    model = await _model_in_force(ctx)
    if model is None:
        return
    for env in model.environments:  # the next stops of this build
        if environment in env.after:
            await look_at(ctx, ref.service, env.name)
    for service, deps in model.dependencies.items():  # who waited for this service here
        if any(d.service == ref.service for d in deps):
            await look_at(ctx, service, environment)


@router.handles(DeploymentFailed)
async def on_failed(event: DeploymentFailed, ctx: HandlerContext) -> None:
    c = event.subject.content
    await store.record_failure(ctx.conn, c.promotion_id, c.reason, event.context.timestamp)


@router.handles(RollbackRequested)
async def on_rollback(event: RollbackRequested, ctx: HandlerContext) -> None:
    """Approve the last good version of the service for the environment, marked as a
    rollback. Unless it is a drill, the bad version is marked (not promoted again without an
    explicit release) and promotion of the service to the environment holds until the
    incident is resolved or a person releases it."""
    c = event.subject.content
    await store.lock_environment(ctx.conn, c.environment)
    now = ctx.now()
    if not c.drill:
        await store.mark_bad(
            ctx.conn, service=c.service, version=c.bad_version, environment=c.environment,
            incident_id=c.incident_id, reason=c.reason, at=now,
        )  # fmt: skip
        await store.hold_for_incident(
            ctx.conn, service=c.service, environment=c.environment, incident_id=c.incident_id,
            reason=c.reason, at=now,
        )  # fmt: skip
    found = await in_force(ctx.conn)
    sha256 = found[0] if found is not None else "none"
    running = (await store.running(ctx.conn, c.environment)).get(c.service)
    if running is not None and running.version != c.bad_version:
        # Asked late: something else runs there now, and rolling "back" would move it.
        moved = (
            f"{c.service}@{c.bad_version} no longer runs in {c.environment} "
            f"({running.version} does): nothing rolled back ({c.incident_id})"
        )
        ctx.span.set_attribute("lockstep.outcome", "bad version no longer runs")
        held = [HoldView(kind="rollback", reason=moved)]
        ctx.emit(_blocked(c.service, c.bad_version, c.environment, held, sha256))
        return
    good = await store.last_good(ctx.conn, c.environment, c.service, c.bad_version)
    if good is None:
        ctx.span.set_attribute("lockstep.outcome", "nothing to roll back to")
        nothing = (
            f"no earlier good version of {c.service} has run in {c.environment}: nothing to "
            f"roll back to ({c.incident_id})"
        )
        held = [HoldView(kind="rollback", reason=nothing)]
        ctx.emit(_blocked(c.service, c.bad_version, c.environment, held, sha256))
        return
    pid = promotion_id(c.service, good.version, good.digest, c.environment, f"rollback:{event.id}")
    made = await store.add_rollback_promotion(
        ctx.conn, promotion_id=pid, service=c.service, version=good.version,
        environment=c.environment, digest=good.digest, incident_id=c.incident_id, at=now,
    )  # fmt: skip
    if not made:
        return
    purl = await store.purl_of(ctx.conn, c.service, good.version)
    ctx.span.set_attribute("lockstep.outcome", f"rollback to {c.service}@{good.version}")
    ctx.emit(
        _approved(
            ApprovedContent(
                promotion_id=pid, service=c.service, version=good.version, digest=good.digest,
                artifact_id=purl or ArtifactRef(c.service, good.version, good.digest).purl(),
                environment=c.environment, policy_sha256=sha256,
                previous_version=c.bad_version, previous_digest=c.bad_digest, rollback=True,
            )
        )
    )  # fmt: skip


@router.handles(IncidentResolved)
async def on_incident_resolved(event: IncidentResolved, ctx: HandlerContext) -> None:
    for service, environment in await store.release_incident_holds(
        ctx.conn, incident_id=event.subject.id
    ):
        await look_at(ctx, service, environment)


@router.handles(HoldReleased)
async def on_hold_released(event: HoldReleased, ctx: HandlerContext) -> None:
    c = event.subject.content
    look: set[tuple[str, str]] = set()
    if c.version is not None and await store.unmark_bad(ctx.conn, c.service, c.version):
        look |= {(s, e) for s, e in await store.waiting_pairs(ctx.conn) if s == c.service}
    if c.environment is not None:
        look |= set(
            await store.release_incident_holds(
                ctx.conn, service=c.service, environment=c.environment
            )
        )
    for service, environment in sorted(look):
        await look_at(ctx, service, environment)


async def periodic(ctx: HandlerContext) -> None:
    """Candidates whose window has opened (or closed) since they were last looked at."""
    for candidate in await store.due(ctx.conn, ctx.now()):
        assert ctx.tracer is not None
        with ctx.tracer.start_as_current_span(
            "promotion: a window opened",
            context=context_from_headers({"traceparent": candidate.traceparent or ""}),
            kind=SpanKind.INTERNAL,
            attributes={
                "lockstep.artifact": candidate.label,
                "lockstep.environment": candidate.environment,
            },
        ):
            await look_at(ctx, candidate.service, candidate.environment)


async def look_at(ctx: HandlerContext, service: str, environment: str) -> None:
    """Promote the newest waiting build of ``service`` to ``environment`` unless held."""
    found = await in_force(ctx.conn)
    if found is None:
        return
    sha256, model = found
    if environment not in {e.name for e in model.environments}:
        return
    await store.lock_environment(ctx.conn, environment)
    waiting = _newest_first(await store.candidates(ctx.conn, service, environment, ("waiting",)))
    if not waiting:
        return
    newest, older = waiting[0], waiting[1:]
    for stale in older:
        await store.set_state(ctx.conn, stale, "superseded")
    now = ctx.now()
    train = rules.train_of(model, service, environment)
    if train is None:
        held = await _own_holds(ctx, model, newest, now)
        if held:
            await _tell_held(ctx, newest, held, sha256)
        else:
            await _approve(ctx, newest, sha256, None, now)
        return
    await _look_at_train(ctx, model, sha256, train, newest, now)


async def _look_at_train(
    ctx: HandlerContext, model: ReleaseModel, sha256: str, train: Train,
    newest: store.Candidate, now: datetime,
) -> None:  # fmt: skip
    """A train leaves when every member is cleared. Members ride together: a dependency on
    another member is met by the version riding along (promotions come in dependency order)."""
    environment = newest.environment
    members: dict[str, store.Candidate | None] = {}
    for member in train.services:
        if member == newest.service:
            members[member] = newest
        else:
            found = await store.candidates(ctx.conn, member, environment, ("waiting",))
            members[member] = _newest_first(found)[0] if found else None
    riding = {m: c.version for m, c in members.items() if c is not None}
    holds = {
        m: await _own_holds(ctx, model, c, now, riding) for m, c in members.items() if c is not None
    }
    if holds[newest.service]:
        await _tell_held(ctx, newest, holds[newest.service], sha256)
        return
    missing = [
        await _why_not_ready(ctx, m, environment, members[m], holds.get(m, []))
        for m in train.services
        if members[m] is None or holds.get(m)
    ]
    ready = {m for m in train.services if members[m] is not None and not holds.get(m)}
    train_hold = rules.train_hold(train, environment, ready)
    if train_hold is not None:
        held = [rules.Hold("train", f"{train_hold.reason} ({'; '.join(missing)})")]
        for m, c in members.items():  # every cleared member hears what the train waits for
            if c is not None and not holds.get(m):
                await _tell_held(ctx, c, held, sha256)
        return
    cleared = [c for c in members.values() if c is not None]
    ready_since = max(c.created_at for c in cleared)
    if (departure := rules.train_departure_hold(train, environment, ready_since, now)) is not None:
        for member_candidate in cleared:
            await _tell_held(ctx, member_candidate, [departure], sha256)
        return
    for member in _dependency_order(model, train.services):
        rider = members[member]
        assert rider is not None
        await _approve(ctx, rider, sha256, train.name, now)


def _dependency_order(model: ReleaseModel, services: list[str]) -> list[str]:
    """``services`` with each one after the members it depends on (otherwise as listed)."""
    ordered: list[str] = []

    def place(service: str, seen: frozenset[str]) -> None:
        if service in ordered or service in seen:
            return
        for dep in model.dependencies.get(service, []):
            if dep.service in services:
                place(dep.service, seen | {service})
        ordered.append(service)

    for service in services:
        place(service, frozenset())
    return ordered


async def _own_holds(
    ctx: HandlerContext,
    model: ReleaseModel,
    c: store.Candidate,
    now: datetime,
    riding: dict[str, str] | None = None,
) -> list[rules.Hold]:
    found: list[rules.Hold] = []
    if (h := rules.stop_the_line_hold(model, c.label)) is not None:
        found.append(h)
    if (h := rules.window_hold(model, c.environment, now)) is not None:
        found.append(h)
    runs_in = await store.where_runs(ctx.conn, c.service, c.version)
    if (h := rules.previous_environment_hold(model, c.environment, c.label, runs_in)) is not None:
        found.append(h)
    for kind, why in await store.rollback_holds(ctx.conn, c.service, c.version, c.environment):
        if kind == "incident":
            found.append(rules.Hold(kind, f"{why} (until it is resolved or released)"))
        else:
            found.append(rules.Hold(kind, f"{c.label} was {why}; release it to promote it again"))
    running = {s: r.version for s, r in (await store.running(ctx.conn, c.environment)).items()}
    found += rules.dependency_holds(model, c.service, c.environment, running | (riding or {}))
    return found


async def _why_not_ready(
    ctx: HandlerContext,
    member: str,
    environment: str,
    waiting: store.Candidate | None,
    holds: list[rules.Hold],
) -> str:
    if waiting is not None:
        return f"{waiting.label}: {', '.join(h.reason for h in holds)}"
    failed = await store.candidates(ctx.conn, member, environment, ("gate-failed",))
    if failed:
        return f"{_newest_first(failed)[0].label} failed its gate"
    return f"{member}: no build has passed its gate"


async def _tell_held(
    ctx: HandlerContext, c: store.Candidate, held: list[rules.Hold], sha256: str
) -> None:
    views = [
        {"kind": h.kind, "reason": h.reason, "until": h.until.isoformat() if h.until else None}
        for h in held
    ]
    until = [h.until for h in held if h.until is not None]
    await store.set_holds(ctx.conn, c, views, min(until) if until else None)
    ctx.span.set_attribute("lockstep.outcome", f"held for {c.environment}")
    if [v["reason"] for v in views] == [h.get("reason") for h in c.holds]:
        return  # told already
    holds = [HoldView(kind=h.kind, reason=h.reason, until=h.until) for h in held]
    with _in_trace_of(ctx, c):
        ctx.emit(_blocked(c.service, c.version, c.environment, holds, sha256))


def _blocked(
    service: str, version: str, environment: str, holds: list[HoldView], sha256: str
) -> PromotionBlocked:
    return PromotionBlocked(
        context=PromotionBlocked.new_context(SOURCE),
        subject=BlockedSubject(
            id=f"{service}@{version}:{environment}",
            content=BlockedContent(
                service=service,
                version=version,
                environment=environment,
                holds=holds,
                policy_sha256=sha256,
            ),
        ),
    )


async def _approve(
    ctx: HandlerContext, c: store.Candidate, sha256: str, train: str | None, now: datetime
) -> None:
    pid = promotion_id(c.service, c.version, c.digest, c.environment, sha256)
    await store.set_state(ctx.conn, c, "approved")
    if not await store.add_promotion(ctx.conn, promotion_id=pid, c=c, train=train, at=now):
        return
    previous = (await store.running(ctx.conn, c.environment)).get(c.service)
    ctx.span.set_attribute("lockstep.outcome", f"promoted to {c.environment}")
    with _in_trace_of(ctx, c):
        ctx.emit(
            _approved(
                ApprovedContent(
                    promotion_id=pid, service=c.service, version=c.version, digest=c.digest,
                    artifact_id=c.purl, environment=c.environment, train=train,
                    policy_sha256=sha256,
                    previous_version=previous.version if previous else None,
                    previous_digest=previous.digest if previous else None,
                )
            )
        )  # fmt: skip


def _approved(content: ApprovedContent) -> PromotionApproved:
    return PromotionApproved(
        context=PromotionApproved.new_context(SOURCE),
        subject=ApprovedSubject(id=content.promotion_id, content=content),
    )


def _in_trace_of(ctx: HandlerContext, c: store.Candidate) -> AbstractContextManager[None]:
    return in_trace_of(
        ctx.tracer,
        c.traceparent,
        f"promotion: look again at {c.environment}",
        {"lockstep.artifact": c.label, "lockstep.environment": c.environment},
    )


def _newest_first(found: list[store.Candidate]) -> list[store.Candidate]:
    def order(c: store.Candidate) -> tuple[Any, ...]:
        try:
            return (1, Version(c.version), c.created_at)
        except InvalidVersion:
            return (0, c.created_at)

    return sorted(found, key=order, reverse=True)


async def _model_in_force(ctx: HandlerContext) -> ReleaseModel | None:
    found = await in_force(ctx.conn)
    return found[1] if found is not None else None
