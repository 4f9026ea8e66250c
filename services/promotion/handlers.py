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

from contextlib import AbstractAsyncContextManager
from datetime import datetime

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
from policy.in_force import in_force, keep, model_in_force
from policy.model import ReleaseModel
from services.promotion import decide, store
from services.promotion import holds as rules
from shared.bus import HandlerContext, Router
from shared.bus.handlers import Thread

SOURCE = "lockstep/promotion"

router = Router()

InForce = tuple[str, ReleaseModel]  # (sha256, model)


def thread_of(service: str, version: str, environment: str) -> str:
    """The key of a candidate's trace thread (its gate decision's subject): what promotion
    decides about it later continues the trace of the gate decision."""
    return f"{service}@{version}:{environment}"


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    content = event.subject.content
    await keep(ctx.conn, content.sha256, content.model, content.updated_by, content.text)
    found = (content.sha256, model_in_force(content.sha256, content.model))  # just kept
    for service, environment in await store.waiting_pairs(ctx.conn):
        await look_at(ctx, found, service, environment)


@router.handles(GatePassed, GateFailed)
async def on_gate(event: GatePassed | GateFailed, ctx: HandlerContext) -> None:
    c = event.subject.content
    await store.lock_environment(ctx.conn, c.environment)
    if await store.upsert_candidate(
        ctx.conn, service=c.service, version=c.version, environment=c.environment,
        digest=c.digest, purl=c.artifact_id,
        state="waiting" if isinstance(event, GatePassed) else "gate-failed", at=ctx.now(),
    ):  # fmt: skip
        await ctx.remember(thread_of(c.service, c.version, c.environment))
    found = await in_force(ctx.conn, locked=True)  # by lock_environment
    await look_at(ctx, found, c.service, c.environment)
    train = rules.train_of(found[1], c.service, c.environment) if found is not None else None
    for member in train.services if train is not None else []:
        if member != c.service:  # the others wait on this one: tell them where it stands
            await look_at(ctx, found, member, c.environment)


@router.handles(ServiceDeployed, ServiceRolledBack)
async def on_deployed(event: ServiceDeployed | ServiceRolledBack, ctx: HandlerContext) -> None:
    ref = event.ref()
    environment = event.subject.content.environment.id
    assert ref.digest is not None
    await store.lock_environment(ctx.conn, environment)
    if not await store.record_history(
        ctx.conn, environment=environment, service=ref.service, version=ref.version,
        digest=ref.digest, promotion_id=event.custom_data.promotion_id,
        rollback=isinstance(event, ServiceRolledBack), at=event.context.timestamp,
    ):  # fmt: skip
        # The same deployment reported again (a deployer that re-sent its report, perhaps
        # under another id): taken in already. Recording it again would move the ledger back
        # to it if something newer has been deployed since.
        ctx.span.set_attribute("lockstep.outcome", "deployment reported again")
        return
    await store.record_deployment(
        ctx.conn, environment=environment, service=ref.service, version=ref.version,
        digest=ref.digest, promotion_id=event.custom_data.promotion_id, at=event.context.timestamp,
    )  # fmt: skip
    if isinstance(event, ServiceRolledBack):
        return  # a rollback moves nothing onward
    found = await in_force(ctx.conn, locked=True)  # by lock_environment
    if found is None:
        return
    model = found[1]
    for env in model.environments:  # the next stops of this build
        if environment in env.after:
            await look_at(ctx, found, ref.service, env.name)
    for service, deps in model.dependencies.items():  # who waited for this service here
        if any(d.service == ref.service for d in deps):
            await look_at(ctx, found, service, environment)


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
    found = await in_force(ctx.conn, locked=True)  # by lock_environment
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
    released = await store.release_incident_holds(ctx.conn, incident_id=event.subject.id)
    found = await in_force(ctx.conn) if released else None
    for service, environment in released:
        await look_at(ctx, found, service, environment)


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
    found = await in_force(ctx.conn) if look else None
    for service, environment in sorted(look):
        await look_at(ctx, found, service, environment)


async def periodic(ctx: HandlerContext) -> None:
    """Candidates whose window has opened (or closed) since they were last looked at, each in
    the trace of its gate decision."""
    due = await store.due(ctx.conn, ctx.now())
    if not due:
        return
    found = await in_force(ctx.conn)
    await ctx.recall(*(thread_of(c.service, c.version, c.environment) for c in due))
    for c in due:
        attributes = {"lockstep.artifact": c.label, "lockstep.environment": c.environment}
        key = thread_of(c.service, c.version, c.environment)
        async with ctx.continuing(key, "promotion: a window opened", attributes):
            await look_at(ctx, found, c.service, c.environment)


async def look_at(
    ctx: HandlerContext, found: InForce | None, service: str, environment: str
) -> None:
    """Look at ``service`` in ``environment`` under the model in force (``found``): load what
    the look weighs, decide (``decide.look_at``), write and emit what was decided."""
    if found is None:
        return
    sha256, model = found
    services = decide.weighs(model, service, environment)
    if services is None:
        return
    await store.lock_environment(ctx.conn, environment)
    snapshot = await store.snapshot(ctx.conn, services, environment)
    now = ctx.now()
    look = decide.look_at(model, service, environment, snapshot, now)
    approved = await _record(ctx, look, environment, sha256, now)
    await _tell(ctx, [t for t in look.held if t.news], approved, sha256)


async def _record(
    ctx: HandlerContext, look: decide.Look, environment: str, sha256: str, now: datetime
) -> list[tuple[str, decide.Approve]]:
    """Write what a look decided; the approvals made now, with their promotion ids (one
    already made, by a redelivery or an earlier look, is not made again)."""
    await store.set_state(ctx.conn, look.superseded, "superseded")
    await store.set_holds(ctx.conn, look.held)
    if look.held:
        ctx.span.set_attribute("lockstep.outcome", f"held for {environment}")
    promotions = [(_promotion_id(a.candidate, sha256), a) for a in look.approved]
    await store.set_state(ctx.conn, [a.candidate for a in look.approved], "approved")
    made = await store.add_promotions(
        ctx.conn, [(pid, a.candidate, a.train) for pid, a in promotions], now
    )
    if made:
        ctx.span.set_attribute("lockstep.outcome", f"promoted to {environment}")
    return [(pid, a) for pid, a in promotions if pid in made]


async def _tell(
    ctx: HandlerContext,
    news: list[decide.Tell],
    approved: list[tuple[str, decide.Approve]],
    sha256: str,
) -> None:
    """Emit the holds that changed and the promotions made, each in its gate decision's trace
    (the threads read in one round trip)."""
    told = [t.candidate for t in news] + [a.candidate for _, a in approved]
    if not told:
        return
    await ctx.recall(*(thread_of(c.service, c.version, c.environment) for c in told))
    for t in news:
        c = t.candidate
        holds = [HoldView(kind=h.kind, reason=h.reason, until=h.until) for h in t.holds]
        async with _continuing(ctx, c):
            ctx.emit(_blocked(c.service, c.version, c.environment, holds, sha256))
    for pid, a in approved:
        c, previous = a.candidate, a.previous
        async with _continuing(ctx, c):
            ctx.emit(
                _approved(
                    ApprovedContent(
                        promotion_id=pid, service=c.service, version=c.version, digest=c.digest,
                        artifact_id=c.purl, environment=c.environment, train=a.train,
                        policy_sha256=sha256,
                        previous_version=previous.version if previous else None,
                        previous_digest=previous.digest if previous else None,
                    )
                )
            )  # fmt: skip


def _promotion_id(c: decide.Candidate, sha256: str) -> str:
    return promotion_id(c.service, c.version, c.digest, c.environment, sha256)


def _continuing(ctx: HandlerContext, c: decide.Candidate) -> AbstractAsyncContextManager[Thread]:
    """What is said about ``c`` continues the trace of its gate decision."""
    return ctx.continuing(
        thread_of(c.service, c.version, c.environment),
        f"promotion: look again at {c.environment}",
        {"lockstep.artifact": c.label, "lockstep.environment": c.environment},
    )


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


def _approved(content: ApprovedContent) -> PromotionApproved:
    return PromotionApproved(
        context=PromotionApproved.new_context(SOURCE),
        subject=ApprovedSubject(id=content.promotion_id, content=content),
    )
