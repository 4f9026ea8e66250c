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
from shared.bus.handlers import Item

SOURCE = "lockstep/artifacts"

router = Router()


def _packaged_lock(event: ArtifactPackaged) -> list[str]:
    try:
        ref = event.ref()
    except ArtifactRefError:
        return []  # rejected without a look at the registry
    return [store.artifact_lock(ref.service, ref.version)]


def _evidence_lock(event: Evidence) -> list[str]:
    try:
        named = event.artifact_ref()
    except ArtifactRefError:
        return []
    return [store.artifact_lock(named.service, named.version)]


@router.handles_batch(ArtifactPackaged, locks=_packaged_lock)
async def on_packaged(items: list[Item[ArtifactPackaged]]) -> None:
    """Builds to register, together: one read of the registry, one insert, one read of the
    evidence waiting for them, one update of it."""
    conn = items[0].ctx.conn
    refs: list[tuple[Item[ArtifactPackaged], ArtifactRef]] = []
    for item in items:
        try:
            refs.append((item, item.event.ref()))
        except ArtifactRefError as exc:
            with item.ctx.current():
                await _reject(item.ctx, item.event, None, code=exc.code, reason=exc.reason)
    if not refs:
        return
    registered = await store.registered_digests(conn, [(r.service, r.version) for _, r in refs])
    new: list[tuple[Item[ArtifactPackaged], ArtifactRef]] = []
    for item, ref in refs:
        ctx, event = item.ctx, item.event
        decision = registry.decide(ref, registered.get((ref.service, ref.version)))
        if isinstance(decision, registry.AlreadyRegistered):
            ctx.span.set_attribute("lockstep.outcome", "already-registered")
        elif isinstance(decision, registry.Conflict):
            with ctx.current():
                await _reject(
                    ctx, event, ref, code="conflicting_digest", reason=decision.reason,
                    registered_digest=decision.registered_digest,
                )  # fmt: skip
        else:
            assert ref.digest is not None
            registered[(ref.service, ref.version)] = ref.digest  # for a second one in the batch
            new.append((item, ref))
    if not new:
        return
    inserted = await store.insert_artifacts(
        conn,
        [
            (
                ref.service, ref.version, ref.digest, i.event.subject.content.change.id,
                i.event.subject.content.change.source, i.event.subject.id,
                i.event.subject.content.sbom.uri if i.event.subject.content.sbom else None,
                i.event.id, format(i.ctx.span.get_span_context().trace_id, "032x"),
            )
            for i, ref in new
        ],
    )  # fmt: skip
    if len(inserted) < len(new):
        raise RuntimeError("a build was registered concurrently; retrying decides again")
    for item, ref in new:
        with item.ctx.current():
            _announce(item.ctx, item.event, ref)
    pending = await store.pending_evidence_of(conn, [(r.service, r.version) for _, r in new])
    by_build = {(r.service, r.version): i for i, r in new}
    settled: list[tuple[str, str, str, str | None]] = []
    for row in pending:
        item = by_build[(row["service"], row["version"])]
        details = row["details"]
        with item.ctx.current():
            settled.append(
                _settle(
                    item.ctx,
                    registered=ArtifactRef(row["service"], row["version"], registered[
                        (row["service"], row["version"])
                    ]),
                    source=row["source"], event_id=row["id"], named_digest=row["digest"],
                    kind=row["kind"], passed=row["passed"],
                    details=json.loads(details) if isinstance(details, str) else details,
                    event_type=row["event_type"],
                )
            )  # fmt: skip
    if settled:
        await store.settle_many(conn, settled)


def _announce(ctx: HandlerContext, event: ArtifactPackaged, ref: ArtifactRef) -> None:
    assert ref.digest is not None
    content = event.subject.content
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


Evidence = TestSuiteRunFinished | SecurityScanFinished | BenchmarkFinished


@router.handles_batch(
    TestSuiteRunFinished, SecurityScanFinished, BenchmarkFinished, locks=_evidence_lock
)
async def on_evidence(items: list[Item[Evidence]]) -> None:
    """Evidence, together: one read of the registry, one insert (attached at once where its
    artifact is registered, else pending until it is)."""
    conn = items[0].ctx.conn
    named: list[tuple[Item[Evidence], ArtifactRef]] = []
    for item in items:
        try:
            named.append((item, item.event.artifact_ref()))
        except ArtifactRefError as exc:
            event = item.event
            with item.ctx.current():
                _reject_evidence(
                    item.ctx, event.id, event.artifact_id(), "invalid_artifact_id", exc.reason
                )
    if not named:
        return
    registered = await store.registered_digests(conn, [(r.service, r.version) for _, r in named])
    rows: list[tuple[Any, ...]] = []
    for item, ref in named:
        ctx, event = item.ctx, item.event
        digest = registered.get((ref.service, ref.version))
        state, reason = "pending", None
        if digest is None:
            ctx.span.set_attribute("lockstep.outcome", "pending-artifact")
        else:
            with ctx.current():
                _, _, state, reason = _settle(
                    ctx, registered=ArtifactRef(ref.service, ref.version, digest),
                    source=event.source, event_id=event.id, named_digest=ref.digest,
                    kind=event.KIND, passed=event.passed(), details=event.details(),
                    event_type=event.context.type,
                )  # fmt: skip
        rows.append(
            (
                event.source, event.id, ref.service, ref.version, ref.digest, event.KIND,
                event.passed(), json.dumps(event.details()), event.context.type, state, reason,
            )
        )  # fmt: skip
    await store.insert_evidence_many(conn, rows, items[0].ctx.now())


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


def _settle(
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
) -> tuple[str, str, str, str | None]:
    """Attach one piece of evidence to its registered artifact (``evidence.recorded``), or
    reject it for another digest; the (source, id, state, reason) to store."""
    assert registered.digest is not None
    mismatch = registry.evidence_mismatch(named_digest, registered.label, registered.digest)
    if mismatch is not None:
        named = ArtifactRef(registered.service, registered.version, named_digest)
        _reject_evidence(ctx, event_id, named.purl(), "digest_mismatch", mismatch)
        return source, event_id, "rejected", mismatch
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
    return source, event_id, "attached", None


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
