"""What the artifacts service does with each event it consumes.

- ``artifact.packaged`` -> registered (``artifact.published``), a no-op for the same digest
  again, or ``artifact.rejected`` saying why and what to do.
- evidence (test suites, scans, benchmarks) -> ``evidence.recorded`` once its artifact is
  registered; before that it waits, and is attached when the artifact arrives.
- the periodic turn: evidence that has waited ``LOCKSTEP_PENDING_EVIDENCE_TTL_S`` for an
  artifact that never came expires (``evidence.rejected``, code ``expired``), so CI hears of
  it instead of waiting for ever.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from events import (
    ArtifactFacts,
    ArtifactPackaged,
    ArtifactPublished,
    ArtifactRef,
    ArtifactRefError,
    ArtifactRejected,
    BenchmarkFinished,
    EvidenceRecorded,
    EvidenceRejected,
    SecurityScanFinished,
    TestSuiteRunFinished,
)
from events.artifacts import PublishedContent, PublishedSubject, RejectedContent, RejectedSubject
from events.evidence import (
    EvidenceRejectedContent,
    EvidenceRejectedSubject,
    RecordedContent,
    RecordedSubject,
)
from services.artifacts import registry, store
from shared.bus import HandlerContext, Router

SOURCE = "lockstep/artifacts"

router = Router()


@router.handles(ArtifactPackaged)
async def on_packaged(event: ArtifactPackaged, ctx: HandlerContext) -> None:
    try:
        ref = event.ref()
    except ArtifactRefError as exc:
        await _reject(ctx, event, None, code=exc.code, reason=exc.reason)
        return
    await store.lock_artifact(ctx.conn, ref.service, ref.version)
    decision = registry.decide(
        ref, await store.registered_digest(ctx.conn, ref.service, ref.version)
    )
    if isinstance(decision, registry.AlreadyRegistered):
        ctx.span.set_attribute("lockstep.outcome", "already-registered")
        return
    if isinstance(decision, registry.Conflict):
        await _reject(
            ctx,
            event,
            ref,
            code="conflicting_digest",
            reason=decision.reason,
            registered_digest=decision.registered_digest,
        )
        return
    content = event.subject.content
    trace_id = format(ctx.span.get_span_context().trace_id, "032x")
    inserted = await store.insert_artifact(
        ctx.conn,
        ref=ref,
        commit=content.change.id,
        commit_source=content.change.source,
        purl=event.subject.id,
        sbom_uri=content.sbom.uri if content.sbom else None,
        event_id=event.id,
        trace_id=trace_id,
    )
    if not inserted:
        raise RuntimeError(f"{ref.label} was registered concurrently; retrying decides again")
    assert ref.digest is not None
    ctx.span.set_attribute("lockstep.outcome", "registered")
    ctx.emit(
        ArtifactPublished(
            context=ArtifactPublished.new_context(SOURCE),
            subject=PublishedSubject(id=ref.purl(), content=PublishedContent(sbom=content.sbom)),
            custom_data=ArtifactFacts(
                service=ref.service,
                version=ref.version,
                digest=ref.digest,
                commit=content.change.id,
                commit_source=content.change.source,
                packaged_event_id=event.id,
                author=event.author,
            ),
        )
    )
    for row in await store.pending_evidence(ctx.conn, ref.service, ref.version):
        details = row["details"]
        await _settle(
            ctx,
            registered=ref,
            source=row["source"],
            event_id=row["id"],
            named_digest=row["digest"],
            kind=row["kind"],
            passed=row["passed"],
            details=json.loads(details) if isinstance(details, str) else details,
            event_type=row["event_type"],
        )


@router.handles(TestSuiteRunFinished, SecurityScanFinished, BenchmarkFinished)
async def on_evidence(
    event: TestSuiteRunFinished | SecurityScanFinished | BenchmarkFinished, ctx: HandlerContext
) -> None:
    try:
        named = event.artifact_ref()
    except ArtifactRefError as exc:
        _reject_evidence(ctx, event.id, event.artifact_id(), "invalid_artifact_id", exc.reason)
        return
    await store.lock_artifact(ctx.conn, named.service, named.version)
    registered_digest = await store.registered_digest(ctx.conn, named.service, named.version)
    await store.insert_evidence(
        ctx.conn,
        source=event.source,
        event_id=event.id,
        ref=named,
        kind=event.KIND,
        passed=event.passed(),
        details=event.details(),
        event_type=event.context.type,
        state="pending",
        received_at=ctx.now(),
    )
    if registered_digest is None:
        ctx.span.set_attribute("lockstep.outcome", "pending-artifact")
        return
    await _settle(
        ctx,
        registered=ArtifactRef(named.service, named.version, registered_digest),
        source=event.source,
        event_id=event.id,
        named_digest=named.digest,
        kind=event.KIND,
        passed=event.passed(),
        details=event.details(),
        event_type=event.context.type,
    )


async def periodic(ctx: HandlerContext) -> None:
    """Evidence whose artifact was not registered within the wait expires, and says so."""
    wait = timedelta(seconds=ctx.settings.pending_evidence_ttl_s)
    why = (
        f" was not registered within {_said(wait)} of this evidence "
        "(LOCKSTEP_PENDING_EVIDENCE_TTL_S); publish the artifact (lockstep publish artifact), "
        "then the evidence again"
    )
    for row in await store.expire_pending(ctx.conn, ctx.now() - wait, why):
        named = ArtifactRef(row["service"], row["version"], row["digest"])
        _reject_evidence(
            ctx, row["id"], named.purl(), "expired", row["reason"], source=row["source"]
        )


def _said(wait: timedelta) -> str:
    """``7d``, ``36h``, ``90m``, ``45s``: the wait as people write it."""
    seconds = int(wait.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _settle(
    ctx: HandlerContext,
    *,
    registered: ArtifactRef,
    source: str,
    event_id: str,
    named_digest: str | None,
    kind: Any,
    passed: bool,
    details: dict[str, Any],
    event_type: str,
) -> None:
    """Attach one piece of evidence to its registered artifact, or reject it for another digest."""
    assert registered.digest is not None
    mismatch = registry.evidence_mismatch(named_digest, registered.label, registered.digest)
    if mismatch is not None:
        await store.settle_evidence(ctx.conn, source, event_id, "rejected", mismatch)
        named = ArtifactRef(registered.service, registered.version, named_digest)
        _reject_evidence(ctx, event_id, named.purl(), "digest_mismatch", mismatch)
        return
    await store.settle_evidence(ctx.conn, source, event_id, "attached")
    ctx.emit(
        EvidenceRecorded(
            context=EvidenceRecorded.new_context(SOURCE),
            subject=RecordedSubject(
                id=event_id,
                source=source,
                content=RecordedContent(
                    artifact_id=registered.purl(),
                    service=registered.service,
                    version=registered.version,
                    digest=registered.digest,
                    kind=kind,
                    passed=passed,
                    details=details,
                    source_event_id=event_id,
                    source_event_type=event_type,
                ),
            ),
        )
    )


async def _reject(
    ctx: HandlerContext,
    event: ArtifactPackaged,
    ref: ArtifactRef | None,
    *,
    code: Any,
    reason: str,
    registered_digest: str | None = None,
) -> None:
    ctx.span.set_attribute("lockstep.outcome", f"rejected:{code}")
    digest = ref.digest if ref else None
    await store.insert_rejection(
        ctx.conn,
        purl=event.subject.id,
        ref=ref,
        digest=digest,
        code=code,
        reason=reason,
        event_id=event.id,
    )
    ctx.emit(
        ArtifactRejected(
            context=ArtifactRejected.new_context(SOURCE),
            subject=RejectedSubject(
                id=event.subject.id,
                content=RejectedContent(
                    code=code,
                    reason=reason,
                    service=ref.service if ref else None,
                    version=ref.version if ref else None,
                    digest=digest,
                    registered_digest=registered_digest,
                    rejected_event_id=event.id,
                ),
            ),
        )
    )


def _reject_evidence(
    ctx: HandlerContext,
    event_id: str,
    artifact_id: str,
    code: Any,
    reason: str,
    *,
    source: str | None = None,
) -> None:
    ctx.span.set_attribute("lockstep.outcome", f"evidence-rejected:{code}")
    ctx.emit(
        EvidenceRejected(
            context=EvidenceRejected.new_context(SOURCE),
            subject=EvidenceRejectedSubject(
                id=event_id,
                source=source,
                content=EvidenceRejectedContent(
                    artifact_id=artifact_id, code=code, reason=reason, source_event_id=event_id
                ),
            ),
        )
    )
