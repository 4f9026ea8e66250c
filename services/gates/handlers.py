"""What the gates service does with each event it consumes.

- ``policy.updated``: the new release model is in force; recent builds are judged again.
- ``artifact.published``: a build to judge, for the gate of every environment.
- ``evidence.recorded``: one more piece of evidence; its build is judged again.
- ``approval.updated``: a person's approval or rejection, kept; it counts only if the gate
  lets that person decide (``policy.people``), else ``approval.refused`` says why (for a
  build not registered yet, the gate's decision says it, once there is one).

A decision is emitted (``gate.passed`` for pass or warning, ``gate.failed`` for fail) only
when it is decided and differs from the last one for that build, environment and model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from opentelemetry.trace import Link

from events import (
    ApprovalRefused,
    ApprovalUpdated,
    ArtifactPublished,
    EvidenceRecorded,
    GateFailed,
    GatePassed,
    PolicyUpdated,
    ServiceDeployed,
)
from events.approvals import RefusedApprovalContent, RefusedApprovalSubject
from events.gates import CriterionVerdict, GateDecisionContent, GateSubject
from policy.in_force import MODEL_LOCK, in_force, keep, model_in_force
from policy.model import ReleaseModel
from policy.people import approval_refusal
from services.gates import decide, scoring, store
from shared.bus import HandlerContext, Router
from shared.bus.handlers import Item, recall_all, remember_all, remember_links

SOURCE = "lockstep/gates"

router = Router()

InForce = tuple[str, ReleaseModel]  # (sha256, model)


def thread_of(service: str, version: str) -> str:
    """The key of a build's trace thread: decisions continue the trace it was registered in
    and link the spans that produced its evidence."""
    return f"{service}@{version}"


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    content = event.subject.content
    await keep(ctx.conn, content.sha256, content.model, content.updated_by, content.text)
    ctx.span.set_attribute("lockstep.policy_sha256", content.sha256)
    found = (content.sha256, model_in_force(content.sha256, content.model))  # just kept
    for build in await store.recent_builds(ctx.conn):
        await store.lock_build(ctx.conn, build.service, build.version)
        await judge(ctx, build.service, build.version, found)


def _published_lock(event: ArtifactPublished) -> list[str]:
    return [store.build_lock(event.custom_data.service, event.custom_data.version)]


def _evidence_lock(event: EvidenceRecorded) -> list[str]:
    c = event.subject.content
    return [store.build_lock(c.service, c.version)]


@router.handles_batch(ArtifactPublished, locks=_published_lock, shared=(MODEL_LOCK,))
async def on_published(items: list[Item[ArtifactPublished]]) -> None:
    """Builds to judge: registered together, then each judged once."""
    builds = []
    for item in items:
        facts = item.event.custom_data
        builds.append(
            decide.Build(
                facts.service, facts.version, facts.digest, item.event.subject.id,
                author=facts.author,
            )
        )  # fmt: skip
    conn = items[0].ctx.conn
    added = await store.add_builds(conn, builds)
    await remember_all(  # each build's trace: the one it was registered in
        [(i.ctx, thread_of(b.service, b.version)) for i, b in zip(items, builds, strict=True)
         if (b.service, b.version) in added]
    )  # fmt: skip
    await judge_all([(i.ctx, b.service, b.version, b) for i, b in zip(items, builds, strict=True)])


@router.handles_batch(EvidenceRecorded, locks=_evidence_lock, shared=(MODEL_LOCK,))
async def on_evidence(items: list[Item[EvidenceRecorded]]) -> None:
    """More evidence: recorded together, then each build it is about judged once."""
    facts = []
    for item in items:
        c = item.event.subject.content
        fact = scoring.EvidenceFact(kind=c.kind, passed=c.passed, details=c.details)
        facts.append((item.event.subject.id, c.service, c.version, fact))
    added = await store.add_evidence_many(items[0].ctx.conn, facts)
    await remember_links(  # the spans that announced it, for the decisions to link
        [(i.ctx, thread_of(f[1], f[2])) for i, f in zip(items, facts, strict=True) if f[0] in added]
    )
    await judge_all([(i.ctx, f[1], f[2], None) for i, f in zip(items, facts, strict=True)])


async def judge_all(
    judged: list[tuple[HandlerContext, str, str, decide.Build | None]],
) -> None:
    """``judge`` for the builds of a batch (the model held by the batch), in a constant number
    of round trips: each build once, after all the batch's facts about it are in, in the span
    of the last event about it; ``published``, where given, as the build describes itself."""
    last: dict[tuple[str, str], tuple[HandlerContext, decide.Build | None]] = {}
    for ctx, service, version, published in judged:
        before = last.pop((service, version), (ctx, None))[1]
        last[(service, version)] = (ctx, published or before)
    contexts = [ctx for ctx, _ in last.values()]
    conn = contexts[0].conn
    found = await in_force(conn, locked=True, memo=contexts[0].memo)
    if found is None:
        for ctx in contexts:
            ctx.span.set_attribute("lockstep.outcome", "no release model yet")
        return
    policy_sha256, model = found
    snapshots = await store.snapshots(conn, list(last))
    soaks: list[tuple[str, str, datetime]] = []
    decided: list[tuple[decide.Build, decide.Decision]] = []
    to_emit: list[tuple[HandlerContext, decide.Build, decide.Judgement, list[str]]] = []
    for key, (ctx, published) in last.items():
        snapshot = snapshots.get(key)
        if snapshot is None:
            continue
        if published is not None:
            snapshot = replace(snapshot, build=published)
        judgement = decide.judge(model, policy_sha256, snapshot, ctx.now())
        build = snapshot.build
        if judgement.recheck_at is not None:
            soaks.append((build.service, build.version, judgement.recheck_at))
        decided += [(build, d) for d in judgement.decisions]
        evidence_ids = [event_id for event_id, _ in snapshot.evidence]
        to_emit.append((ctx, build, judgement, evidence_ids))
    if soaks:
        await store.soak_all(conn, soaks)
    if decided:
        await store.record_all_decisions(conn, decided, policy_sha256)
        await recall_all(
            [ctx for ctx, _, j, _ in to_emit if j.decisions],
            *(thread_of(b.service, b.version) for _, b, j, _ in to_emit if j.decisions),
        )
    for ctx, build, judgement, evidence_ids in to_emit:
        with ctx.current():
            for decision in judgement.decisions:
                await _emit(ctx, build, decision, policy_sha256, evidence_ids)
        ctx.span.set_attribute("lockstep.outcome", judgement.outcome or "no new decision")


@router.handles(ServiceDeployed)
async def on_deployed(event: ServiceDeployed, ctx: HandlerContext) -> None:
    """Soak time starts; the build becomes the baseline its successors are measured against."""
    ref = event.ref()
    environment = event.subject.content.environment.id
    await store.lock_build(ctx.conn, ref.service, ref.version)
    await store.record_deployment(
        ctx.conn, environment, ref.service, ref.version, event.context.timestamp
    )
    await judge(ctx, ref.service, ref.version)


@router.handles(ApprovalUpdated)
async def on_approval(event: ApprovalUpdated, ctx: HandlerContext) -> None:
    t = event.custom_data
    await store.lock_build(ctx.conn, t.service, t.version)
    await store.record_approval(
        ctx.conn, t.service, t.version, t.environment, event.who, event.subject.content.decision
    )
    await judge(ctx, t.service, t.version, approval=event)


async def periodic(ctx: HandlerContext) -> None:
    """Builds whose soak time has run out are judged again, in their own traces."""
    due = await store.soaked(ctx.conn, ctx.now())
    if not due:
        return
    found = await in_force(ctx.conn)
    await ctx.recall(*(thread_of(service, version) for service, version in due))
    for service, version in due:
        await store.lock_build(ctx.conn, service, version)
        key = thread_of(service, version)
        attributes = {"lockstep.artifact": key}
        async with ctx.continuing(key, "gates: soak time is up", attributes):
            await judge(ctx, service, version, found)


async def judge(
    ctx: HandlerContext,
    service: str,
    version: str,
    found: InForce | None = None,
    *,
    published: decide.Build | None = None,
    approval: ApprovalUpdated | None = None,
) -> None:
    """Judge a build (if registered) against every environment's gate under the model in
    force (``found``: as the caller read it; None: read it here, the caller having locked the
    build, which holds the model), then record and emit what is new. ``published``: the build
    as its ``artifact.published`` describes it. ``approval``: the person's decision just
    recorded; if the gate does not let them decide, ``approval.refused`` says why."""
    snapshot = await store.snapshot(ctx.conn, service, version)
    if snapshot is None:
        return
    if published is not None:
        snapshot = replace(snapshot, build=published)
    found = found or await in_force(ctx.conn, locked=True)  # by the caller's lock_build
    if found is None:
        ctx.span.set_attribute("lockstep.outcome", "no release model yet")
        return
    policy_sha256, model = found
    judgement = decide.judge(model, policy_sha256, snapshot, ctx.now())
    build = snapshot.build
    if approval is not None:
        _refuse_if_not_theirs(ctx, approval, model, policy_sha256, build)
    if judgement.recheck_at is not None:
        await store.soak_until(ctx.conn, build.service, build.version, judgement.recheck_at)
    if judgement.decisions:
        await store.record_decisions(ctx.conn, build, policy_sha256, judgement.decisions)
    evidence_ids = [event_id for event_id, _ in snapshot.evidence]
    for decision in judgement.decisions:
        await _emit(ctx, build, decision, policy_sha256, evidence_ids)
    ctx.span.set_attribute("lockstep.outcome", judgement.outcome or "no new decision")


def _refuse_if_not_theirs(
    ctx: HandlerContext,
    approval: ApprovalUpdated,
    model: ReleaseModel,
    policy_sha256: str,
    build: decide.Build,
) -> None:
    target = approval.custom_data
    why = approval_refusal(model, target.environment, build.service, approval.who, build.author)
    if why is None:
        return
    ctx.span.set_attribute("lockstep.approval", "not counted")
    ctx.emit(
        ApprovalRefused(
            context=ApprovalRefused.new_context(SOURCE),
            subject=RefusedApprovalSubject(
                id=approval.subject.id,
                content=RefusedApprovalContent(
                    who=approval.who,
                    decision=approval.subject.content.decision,
                    reason=why,
                    refused_event_id=approval.id,
                    policy_sha256=policy_sha256,
                ),
            ),
            custom_data=target,
        )
    )


async def _emit(
    ctx: HandlerContext,
    build: decide.Build,
    decision: decide.Decision,
    policy_sha256: str,
    evidence_ids: list[str],
) -> None:
    """A decision, in the build's trace, from a span linking the evidence it weighed."""
    result, environment = decision.result, decision.environment
    kind = GateFailed if result.result == "fail" else GatePassed
    attributes = {"lockstep.artifact": build.label}
    key = thread_of(build.service, build.version)
    async with ctx.continuing(key, f"gates: judge {environment}", attributes) as thread:
        name = f"gate {environment}: {result.result}"
        with _decision_span(ctx, name, thread.span_links(), attributes):
            ctx.emit(
                kind(
                    context=kind.new_context(SOURCE),
                    subject=GateSubject(
                        id=f"{build.label}:{environment}",
                        content=GateDecisionContent(
                            service=build.service,
                            version=build.version,
                            digest=build.digest,
                            artifact_id=build.purl,
                            environment=environment,
                            result=result.result,
                            score=decision.score,
                            criteria=[_verdict(j) for j in result.criteria],
                            conditions=[_verdict(j) for j in result.conditions],
                            policy_sha256=policy_sha256,
                            evidence_ids=evidence_ids,
                        ),
                    ),
                )
            )


@contextmanager
def _decision_span(
    ctx: HandlerContext, name: str, links: list[Link], attributes: dict[str, str]
) -> Iterator[None]:
    """The decision itself: a span linking each piece of evidence it weighed (fan-in)."""
    if ctx.tracer is None:
        yield
        return
    with ctx.tracer.start_as_current_span(name, links=links, attributes=attributes):
        yield


def _verdict(j: scoring.Judged) -> CriterionVerdict:
    return CriterionVerdict(
        criterion=j.criterion,
        verdict=j.verdict,
        key=j.key,
        weight=j.weight,
        measured=j.measured,
        reason=j.reason,
    )
