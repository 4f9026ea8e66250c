"""What the gates service does with each event it consumes.

- ``policy.updated``: the new release model is in force; recent builds are judged again.
- ``artifact.published``: a build to judge, for the gate of every environment.
- ``evidence.recorded``: one more piece of evidence; its build is judged again.

A decision is emitted (``gate.passed`` for pass or warning, ``gate.failed`` for fail) only
when it is decided and differs from the last one for that build, environment and model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from opentelemetry import trace
from opentelemetry.trace import Link

from events import (
    ApprovalUpdated,
    ArtifactPublished,
    EvidenceRecorded,
    GateFailed,
    GatePassed,
    PolicyUpdated,
    ServiceDeployed,
)
from events.gates import CriterionVerdict, GateDecisionContent, GateSubject
from policy.in_force import in_force, keep
from policy.model import Gate, parse_duration
from services.gates import scoring, store
from shared.bus import HandlerContext, Router
from shared.telemetry import context_from_headers, current_trace_headers, in_trace_of

SOURCE = "lockstep/gates"

router = Router()


@router.handles(PolicyUpdated)
async def on_policy(event: PolicyUpdated, ctx: HandlerContext) -> None:
    content = event.subject.content
    await keep(ctx.conn, content.sha256, content.model, content.updated_by)
    ctx.span.set_attribute("lockstep.policy_sha256", content.sha256)
    for build in await store.recent_builds(ctx.conn):
        await store.lock_build(ctx.conn, build.service, build.version)
        await judge(ctx, build)


@router.handles(ArtifactPublished)
async def on_published(event: ArtifactPublished, ctx: HandlerContext) -> None:
    facts = event.custom_data
    await store.lock_build(ctx.conn, facts.service, facts.version)
    build = store.Build(
        facts.service,
        facts.version,
        facts.digest,
        event.subject.id,
        current_trace_headers().get("traceparent"),
    )
    await store.add_build(ctx.conn, build)
    await judge(ctx, build)


@router.handles(EvidenceRecorded)
async def on_evidence(event: EvidenceRecorded, ctx: HandlerContext) -> None:
    c = event.subject.content
    await store.lock_build(ctx.conn, c.service, c.version)
    fact = scoring.EvidenceFact(kind=c.kind, passed=c.passed, details=c.details)
    producer = ctx.record.header("traceparent") if ctx.record is not None else None
    await store.add_evidence(ctx.conn, event.subject.id, c.service, c.version, fact, producer)
    build = await store.build(ctx.conn, c.service, c.version)
    if build is not None:
        await judge(ctx, build)


@router.handles(ServiceDeployed)
async def on_deployed(event: ServiceDeployed, ctx: HandlerContext) -> None:
    """Soak time starts; the build becomes the baseline its successors are measured against."""
    ref = event.ref()
    environment = event.subject.content.environment.id
    await store.lock_build(ctx.conn, ref.service, ref.version)
    await store.record_deployment(
        ctx.conn, environment, ref.service, ref.version, event.context.timestamp
    )
    build = await store.build(ctx.conn, ref.service, ref.version)
    if build is not None:
        await judge(ctx, build)


@router.handles(ApprovalUpdated)
async def on_approval(event: ApprovalUpdated, ctx: HandlerContext) -> None:
    t = event.custom_data
    await store.lock_build(ctx.conn, t.service, t.version)
    await store.record_approval(
        ctx.conn, t.service, t.version, t.environment, event.who, event.subject.content.decision
    )
    build = await store.build(ctx.conn, t.service, t.version)
    if build is not None:
        await judge(ctx, build)


async def periodic(ctx: HandlerContext) -> None:
    """Builds whose soak time has run out are judged again."""
    assert ctx.tracer is not None
    for build in await store.soaked(ctx.conn, ctx.now()):
        await store.lock_build(ctx.conn, build.service, build.version)
        label = f"{build.service}@{build.version}"
        with in_trace_of(
            ctx.tracer, build.traceparent, "gates: soak time is up", {"lockstep.artifact": label}
        ):
            ctx.span = trace.get_current_span()
            await judge(ctx, build)


async def judge(ctx: HandlerContext, build: store.Build) -> None:
    """Judge ``build`` against every environment's gate under the model in force."""
    found = await in_force(ctx.conn)
    if found is None:
        ctx.span.set_attribute("lockstep.outcome", "no release model yet")
        return
    policy_sha256, model = found
    evidence = await store.evidence(ctx.conn, build.service, build.version)
    facts = [fact for _, fact in evidence]
    links = _links(await store.evidence_traces(ctx.conn, build.service, build.version))
    outcome: list[str] = []
    deployed = await store.deployed_at(ctx.conn, build.service, build.version)
    now = ctx.now()
    for environment in model.environments:
        gate = model.gates.get(environment.name, Gate())
        soaked_for = None
        if not environment.after:  # nothing before it to soak in
            gate = gate.model_copy(update={"soak": None})
        elif all(e in deployed for e in environment.after):
            since = max(deployed[e] for e in environment.after)
            soaked_for = max(now - since, timedelta(0))
            if gate.soak is not None and soaked_for < parse_duration(gate.soak):
                due = since + parse_duration(gate.soak)
                await store.soak_until(ctx.conn, build.service, build.version, due)
        decisions = await store.approvals(ctx.conn, build.service, build.version, environment.name)
        result = scoring.evaluate(
            gate,
            facts,
            baseline=(
                await _baseline(ctx, build, environment.name)
                if any(c.evidence == "benchmark" for c in gate.criteria)
                else None
            ),
            soaked_for=soaked_for,
            approvals=sum(1 for d in decisions.values() if d == "approved"),
            rejected_by=sorted(who for who, d in decisions.items() if d == "rejected"),
        )
        if not result.decided:
            continue
        assert result.score is not None
        last = await store.decision(ctx.conn, build.service, build.version, environment.name)
        if last == (result.result, policy_sha256):
            continue
        await store.record_decision(
            ctx.conn, build.service, build.version, environment.name,
            result.result, result.score, policy_sha256,
        )  # fmt: skip
        outcome.append(f"{environment.name} {result.result}")
        kind = GateFailed if result.result == "fail" else GatePassed
        attributes = {"lockstep.artifact": f"{build.service}@{build.version}"}
        with (
            in_trace_of(
                ctx.tracer, build.traceparent, f"gates: judge {environment.name}", attributes
            ),
            _decision_span(ctx, f"gate {environment.name}: {result.result}", links, attributes),
        ):
            ctx.emit(
                kind(
                    context=kind.new_context(SOURCE),
                    subject=GateSubject(
                        id=f"{build.service}@{build.version}:{environment.name}",
                        content=GateDecisionContent(
                            service=build.service,
                            version=build.version,
                            digest=build.digest,
                            artifact_id=build.purl,
                            environment=environment.name,
                            result=result.result,
                            score=result.score,
                            criteria=[_verdict(j) for j in result.criteria],
                            conditions=[_verdict(j) for j in result.conditions],
                            policy_sha256=policy_sha256,
                            evidence_ids=[event_id for event_id, _ in evidence],
                        ),
                    ),
                )
            )
    ctx.span.set_attribute("lockstep.outcome", ", ".join(outcome) or "no new decision")


async def _baseline(
    ctx: HandlerContext, build: store.Build, environment: str
) -> dict[str, float] | None:
    """The benchmark metrics of the version running in ``environment`` now, if any."""
    running = await store.running_version(ctx.conn, environment, build.service)
    if running is None or running == build.version:
        return None
    metrics: dict[str, float] = {}
    for _, fact in await store.evidence(ctx.conn, build.service, running):
        if fact.kind == "benchmark":
            for name, m in fact.details.get("metrics", {}).items():
                metrics[name] = float(m["value"])
    return metrics or None


def _links(traceparents: list[str]) -> list[Link]:
    """Links to the spans that produced the evidence a decision used."""
    found = []
    for tp in traceparents:
        span_context = trace.get_current_span(
            context_from_headers({"traceparent": tp})
        ).get_span_context()
        if span_context.is_valid:
            found.append(Link(span_context))
    return found


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
