"""What the promotion service does.

- ``gate.passed`` / ``gate.failed``: a build becomes (or stops being) a candidate for an
  environment, and its service there (with its train's other members) is looked at again; a
  batch at a time, decided as one at a time would decide it.
- ``service.deployed`` / ``deployment.failed``: the ledger of what runs where; the next
  environments, and whatever depends on the service, are looked at again.
- ``policy.updated``: the model in force; every waiting candidate is looked at again.
- every few seconds: candidates whose window opens (or closes) are looked at again.

Looking at (service, environment): the newest waiting build is promoted unless something
holds it, and older waiting builds are superseded. A hold is told once
(``promotion.blocked``) and again only when the reasons change.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from events import (
    ArtifactRef,
    CDEvent,
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
from policy.in_force import MODEL_LOCK, in_force, keep, model_in_force
from policy.model import ReleaseModel
from services.promotion import decide, store
from services.promotion import holds as rules
from shared.bus import HandlerContext, Router
from shared.bus.handlers import Item, Thread, recall_all, remember_all

SOURCE = "lockstep/promotion"

router = Router()

InForce = tuple[str, ReleaseModel]  # (sha256, model)


def thread_of(service: str, version: str, environment: str) -> str:
    """The key of a candidate's trace thread (its gate decision's subject): what promotion
    decides about it later continues the trace of the gate decision."""
    return f"{service}@{version}:{environment}"


# --- what must be serial ------------------------------------------------------------------
#
# Decisions about a service in an environment are made one at a time, and a look at a train's
# member weighs (and writes) every member's builds, so it locks every member's key, sorted: a
# service in an environment (``store.service_key``), not a whole environment. The bus takes
# the keys an event declares (``locks=``) for a whole batch, in one sorted statement, before
# any handler runs, with the model in force held shared (``MODEL_LOCK``); which services
# ride in a train, or depend on one another, is the model's, so the keys are named under the
# model this process last saw in force (``_hint``). A handler reads the model its batch
# holds, and locks by hand whatever that model's keys add to the declared ones (only when the
# model changed since: after a ``policy.updated`` another instance handled, or at start-up).
# Putting a model in force holds it alone (``keep``), which excludes every decision at once.


class _Hint:
    """The model in force, as this process last saw it: what the declared locks are named
    under. A hint only; the handlers check it (``_lock_missing``)."""

    found: InForce | None = None


_hint = _Hint()
# The keys each event declared, by (source, id), until its handler checks them; a batch that
# is undone leaves its keys behind, hence the bound (a key not found is locked by hand).
_declared: dict[tuple[str, str], frozenset[str]] = {}
_DECLARED_MAX = 10_000


def look_keys(model: ReleaseModel | None, service: str, environment: str) -> set[str]:
    """The locks a look at ``service`` in ``environment`` takes: its own key, and those of
    the other members of its train there."""
    services = decide.weighs(model, service, environment) if model is not None else None
    return {store.service_key(environment, s) for s in services or [service]}


def _declare(event: CDEvent, keys: set[str]) -> list[str]:
    if len(_declared) >= _DECLARED_MAX:
        _declared.clear()
    _declared[(event.source, event.id)] = frozenset(keys)
    return sorted(keys)


async def _lock_missing(
    conn: asyncpg.Connection, found: InForce | None, needed: list[tuple[CDEvent, set[str]]]
) -> None:
    """Lock by hand the keys each event needs under the model in force (``found``, held by
    the transaction) that it did not declare; none, unless the model changed since the
    declared keys were named."""
    missing: set[str] = set()
    for event, keys in needed:
        missing |= keys - _declared.pop((event.source, event.id), frozenset())
    _hint.found = found
    if missing:
        await store.lock_keys(conn, sorted(missing))


def _gate_keys(model: ReleaseModel | None, event: GatePassed | GateFailed) -> set[str]:
    c = event.subject.content
    return look_keys(model, c.service, c.environment)


def _gate_locks(event: GatePassed | GateFailed) -> list[str]:
    return _declare(event, _gate_keys(_model(_hint.found), event))


def _deployed_keys(
    model: ReleaseModel | None, event: ServiceDeployed | ServiceRolledBack
) -> set[str]:
    """A deployment is looked at from: the service here (what runs here changes), its next
    environments (where it may go now), and whoever depends on it here."""
    service, environment = event.ref().service, event.subject.content.environment.id
    keys = {store.service_key(environment, service)}
    if model is None or isinstance(event, ServiceRolledBack):
        return keys
    for service_, environment_ in _moved_on(model, service, environment):
        keys |= look_keys(model, service_, environment_)
    return keys


def _deployed_locks(event: ServiceDeployed | ServiceRolledBack) -> list[str]:
    return _declare(event, _deployed_keys(_model(_hint.found), event))


def _rollback_locks(event: RollbackRequested) -> list[str]:
    c = event.subject.content
    return [store.service_key(c.environment, c.service)]


def _model(found: InForce | None) -> ReleaseModel | None:
    return found[1] if found is not None else None


def _moved_on(model: ReleaseModel, service: str, environment: str) -> list[tuple[str, str]]:
    """What a deployment of ``service`` to ``environment`` looks at again: the service in
    the environments after this one, and the services that depend on it here."""
    found = [(service, env.name) for env in model.environments if environment in env.after]
    found += [
        (dependent, environment)
        for dependent, deps in model.dependencies.items()
        if any(d.service == service for d in deps)
    ]
    return found


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    """A new model in force: every waiting candidate is looked at again. ``keep`` holds the
    model alone, so no other decision runs meanwhile (no service locks needed)."""
    content = event.subject.content
    await keep(
        ctx.conn, content.sha256, content.model, content.updated_by, content.text, memo=ctx.memo
    )
    found = (content.sha256, model_in_force(content.sha256, content.model))  # just kept
    _hint.found = found
    await look_all(found, [(ctx, s, e) for s, e in await store.waiting_pairs(ctx.conn)])


@router.handles_batch(GatePassed, GateFailed, locks=_gate_locks, shared=(MODEL_LOCK,))
async def on_gates(items: list[Item[GatePassed | GateFailed]]) -> None:
    """Gate decisions: each build becomes (or stops being) a candidate, and its service (with
    its train's other members) is looked at again. A batch is decided as its events one at a
    time would be (``_decide``), with a constant number of statements for it all."""
    conn, memo = items[0].ctx.conn, items[0].ctx.memo
    found = await in_force(conn, locked=True, memo=memo)  # by the batch's MODEL_LOCK
    model = _model(found)
    await _lock_missing(conn, found, [(i.event, _gate_keys(model, i.event)) for i in items])
    steps = []
    for item in items:
        c = item.event.subject.content
        arrival = decide.Candidate(
            service=c.service, version=c.version, environment=c.environment, digest=c.digest,
            purl=c.artifact_id, state="waiting" if isinstance(item.event, GatePassed)
            else "gate-failed", holds=[], created_at=item.ctx.now(),
        )  # fmt: skip
        looks = [c.service]
        train = rules.train_of(model, c.service, c.environment) if model is not None else None
        for member in train.services if train is not None else []:
            if member != c.service:  # the others wait on this one: tell them where it stands
                looks.append(member)
        steps.append(_Step(item.ctx, c.environment, looks, arrival))
    await _decide(found, steps, current=True)


@dataclass
class _Step:
    """One event's share of a batch: a gate decision's arrival (None: none), then looks at
    ``looks`` in ``environment``, in ``ctx``."""

    ctx: HandlerContext
    environment: str
    looks: list[str]
    arrival: decide.Candidate | None = None


async def look_all(found: InForce | None, looks: list[tuple[HandlerContext, str, str]]) -> None:
    """Look at each (ctx, service, environment), in order, under the model in force
    (``found``), the caller holding their keys (``_decide``)."""
    await _decide(
        found, [_Step(ctx, environment, [service]) for ctx, service, environment in looks]
    )


async def _decide(found: InForce | None, steps: list[_Step], *, current: bool = False) -> None:
    """Take ``steps`` in, in order, as one at a time would: each arrival stored (a build
    approved or superseded stays so), then each look decided (``decide.look_at``) seeing what
    the steps before it stored and decided. It is done in memory on one snapshot of every
    environment the steps touch (``decide.arrive``, ``decide.look_at_each``); then what was
    stored and decided is written, and told, in a constant number of statements for them all.
    Each look is emitted in its step's ctx (``current``: that ctx's span made current, as a
    batch handler's work for one item is)."""
    if not steps:
        return
    model = _model(found)
    wanted: dict[str, set[str]] = {}
    for step in steps:
        services = wanted.setdefault(step.environment, set())
        if step.arrival is not None:
            services.add(step.arrival.service)
        for service in step.looks:
            services.update(
                (decide.weighs(model, service, step.environment) or [])
                if model is not None else []
            )  # fmt: skip
    if not any(wanted.values()):
        return  # no model in force, or none of these environments in it, and nothing arrived
    builds = [(s.environment, s.arrival.service, s.arrival.version) for s in steps if s.arrival]
    first = steps[0].ctx
    conn, now = first.conn, first.now()
    snapshots = await store.snapshots(
        conn, {env: sorted(services) for env, services in wanted.items() if services}, builds
    )
    stored: dict[tuple[str, str, str], decide.Candidate] = {}
    remembered: list[tuple[HandlerContext, str]] = []
    decided: Decided = []
    for step in steps:
        snapshot = snapshots.get(step.environment)
        if snapshot is None:
            continue
        if step.arrival is not None:
            snapshot, now_stands = decide.arrive(snapshot, step.arrival)
            if now_stands is not None:
                key = (now_stands.service, now_stands.version, now_stands.environment)
                stored[key] = now_stands
                remembered.append((step.ctx, thread_of(*key)))
        if model is not None:
            looked = [s for s in step.looks if decide.weighs(model, s, step.environment)]
            looks, snapshot = decide.look_at_each(model, looked, step.environment, snapshot, now)
            decided += [(step.ctx, step.environment, look) for look in looks]
        snapshots[step.environment] = snapshot
    if stored:
        await store.upsert_candidates(
            conn,
            [(c.service, c.version, c.environment, c.digest, c.purl, c.state, c.created_at)
             for c in stored.values()],
        )  # fmt: skip
        await remember_all(remembered)
    if found is None or not decided:
        return
    approved = await _record(decided, found[0], now)
    await _tell(decided, approved, found[0], current=current)


@router.handles(ServiceDeployed, ServiceRolledBack, locks=_deployed_locks, shared=(MODEL_LOCK,))
async def on_deployed(event: ServiceDeployed | ServiceRolledBack, ctx: HandlerContext) -> None:
    ref = event.ref()
    environment = event.subject.content.environment.id
    assert ref.digest is not None
    found = await in_force(ctx.conn, locked=True, memo=ctx.memo)  # by the declared MODEL_LOCK
    await _lock_missing(ctx.conn, found, [(event, _deployed_keys(_model(found), event))])
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
    if isinstance(event, ServiceRolledBack) or found is None:
        return  # a rollback moves nothing onward
    await look_all(found, [(ctx, s, e) for s, e in _moved_on(found[1], ref.service, environment)])


@router.handles(DeploymentFailed)
async def on_failed(event: DeploymentFailed, ctx: HandlerContext) -> None:
    c = event.subject.content
    await store.record_failure(ctx.conn, c.promotion_id, c.reason, event.context.timestamp)


@router.handles(RollbackRequested, locks=_rollback_locks, shared=(MODEL_LOCK,))
async def on_rollback(event: RollbackRequested, ctx: HandlerContext) -> None:
    """Approve the last good version of the service for the environment, marked as a
    rollback. Unless it is a drill, the bad version is marked (not promoted again without an
    explicit release) and promotion of the service to the environment holds until the
    incident is resolved or a person releases it."""
    c = event.subject.content
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
    found = await in_force(ctx.conn, locked=True, memo=ctx.memo)  # by the declared MODEL_LOCK
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
    await _look_locked(ctx, released)


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
    await _look_locked(ctx, sorted(look))


async def _look_locked(ctx: HandlerContext, pairs: list[tuple[str, str]]) -> None:
    """Look at each (service, environment) that only the database names (so no lock could
    be declared for it): their keys locked first, in one sorted statement."""
    if not pairs:
        return
    found = await in_force(ctx.conn)
    await store.lock_keys(ctx.conn, _keys_of(found, pairs))
    await look_all(found, [(ctx, s, e) for s, e in pairs])


def _keys_of(found: InForce | None, pairs: list[tuple[str, str]]) -> list[str]:
    return sorted({k for s, e in pairs for k in look_keys(_model(found), s, e)})


async def periodic(ctx: HandlerContext) -> None:
    """Candidates whose window has opened (or closed) since they were last looked at, each in
    the trace of its gate decision."""
    due = await store.due(ctx.conn, ctx.now())
    if not due:
        return
    found = await in_force(ctx.conn)
    await store.lock_keys(ctx.conn, _keys_of(found, [(c.service, c.environment) for c in due]))
    await ctx.recall(*(thread_of(c.service, c.version, c.environment) for c in due))
    for c in due:
        attributes = {"lockstep.artifact": c.label, "lockstep.environment": c.environment}
        key = thread_of(c.service, c.version, c.environment)
        async with ctx.continuing(key, "promotion: a window opened", attributes):
            await look_all(found, [(ctx, c.service, c.environment)])


Decided = list[tuple[HandlerContext, str, decide.Look]]  # (ctx, environment, look)


async def _record(
    decided: Decided, sha256: str, now: datetime
) -> dict[int, list[tuple[str, decide.Approve]]]:
    """Write what the looks decided (a constant number of statements for them all); the
    approvals made now, with their promotion ids, by look (one already made, by a redelivery
    or an earlier look, is not made again)."""
    conn = decided[0][0].conn
    states = [(c, "superseded") for _, _, look in decided for c in look.superseded]
    states += [(a.candidate, "approved") for _, _, look in decided for a in look.approved]
    await store.set_states(conn, states)
    last_told = {
        (t.candidate.service, t.candidate.version, t.candidate.environment): t
        for _, _, look in decided for t in look.held
    }  # fmt: skip
    await store.set_holds(conn, list(last_told.values()))
    promotions = [
        (n, _promotion_id(a.candidate, sha256), a)
        for n, (_, _, look) in enumerate(decided) for a in look.approved
    ]  # fmt: skip
    made = await store.add_promotions(
        conn, [(pid, a.candidate, a.train) for _, pid, a in promotions], now
    )
    for ctx, environment, look in decided:
        if look.held:
            ctx.span.set_attribute("lockstep.outcome", f"held for {environment}")
    approved: dict[int, list[tuple[str, decide.Approve]]] = {}
    for n, pid, a in promotions:
        if pid in made:
            approved.setdefault(n, []).append((pid, a))
            ctx, environment, _ = decided[n]
            ctx.span.set_attribute("lockstep.outcome", f"promoted to {environment}")
    return approved


async def _tell(
    decided: Decided,
    approved: dict[int, list[tuple[str, decide.Approve]]],
    sha256: str,
    *,
    current: bool,
) -> None:
    """Emit the holds that changed and the promotions made, each in its gate decision's trace
    (the threads read in one round trip), look by look."""
    told = {
        n: ([t for t in look.held if t.news], approved.get(n, []))
        for n, (_, _, look) in enumerate(decided)
    }
    keys = [
        thread_of(c.service, c.version, c.environment)
        for news, made in told.values()
        for c in [t.candidate for t in news] + [a.candidate for _, a in made]
    ]
    if not keys:
        return
    contexts = list({id(ctx): ctx for ctx, _, _ in decided}.values())
    await recall_all(contexts, *keys)
    for n, (news, made) in told.items():
        ctx = decided[n][0]
        with ctx.current() if current else nullcontext():
            for t in news:
                c = t.candidate
                holds = [HoldView(kind=h.kind, reason=h.reason, until=h.until) for h in t.holds]
                async with _continuing(ctx, c):
                    ctx.emit(_blocked(c.service, c.version, c.environment, holds, sha256))
            for pid, a in made:
                c, previous = a.candidate, a.previous
                async with _continuing(ctx, c):
                    ctx.emit(
                        _approved(
                            ApprovedContent(
                                promotion_id=pid, service=c.service, version=c.version,
                                digest=c.digest, artifact_id=c.purl, environment=c.environment,
                                train=a.train, policy_sha256=sha256,
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
