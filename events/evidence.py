"""Evidence: what CI verified about an artifact.

In: CDEvents ``testsuiterun.finished`` (with ``customData.artifactId``), and Lockstep's own
``securityscan.finished`` and ``benchmark.finished``. Out: ``evidence.recorded`` once the evidence
is attached to a registered artifact, or ``evidence.rejected`` when it cannot be.

Every piece of evidence names its artifact by purl: ``pkg:oci/checkout@sha256:…?tag=1.4.2``, or
``pkg:generic/checkout@1.4.2`` when the producer does not know the digest.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from events import topics
from events._artifact_ref import ArtifactRef, ArtifactRefError, service_of
from events._base import CDEvent, CustomDataIsJson, Model, Reference

EvidenceKind = Literal["tests", "security-scan", "benchmark"]

ARTIFACT_ID_DESCRIPTION = (
    "The artifact this evidence is about, as a purl with its version "
    "(pkg:oci/<service>@sha256:<hex>?tag=<version> or pkg:generic/<service>@<version>)"
)


class _AboutArtifact(CDEvent):
    """Evidence about one artifact; subclasses say where the artifact id lives."""

    KIND: ClassVar[EvidenceKind]
    INBOUND: ClassVar[bool] = True

    def artifact_id(self) -> str:
        raise NotImplementedError

    def artifact_ref(self) -> ArtifactRef:
        return ArtifactRef.from_purl(self.artifact_id(), require_digest=False)

    def partition_key(self) -> str:
        return service_of(self.artifact_id()) or "unknown"

    def artifact_label(self) -> str | None:
        try:
            return self.artifact_ref().label
        except ArtifactRefError:
            return None

    def passed(self) -> bool:
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        raise NotImplementedError


# --- test suites (CDEvents testsuiterun.finished) -------------------------------------------


class TestSuite(Model):
    id: str = Field(min_length=1)
    version: str | None = None
    name: str | None = None
    uri: str | None = None


class TestSuiteRunContent(Model):
    outcome: Literal["success", "failure", "cancel", "error"]
    environment: Reference
    test_suite: TestSuite | None = Field(default=None, alias="testSuite")
    severity: Literal["low", "medium", "high", "critical"] | None = None
    reason: str | None = None


class TestSuiteRunSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: TestSuiteRunContent


class TestCounts(Model):
    artifact_id: str = Field(alias="artifactId", min_length=1, description=ARTIFACT_ID_DESCRIPTION)
    passed: int | None = Field(default=None, ge=0)
    failed: int | None = Field(default=None, ge=0)
    skipped: int | None = Field(default=None, ge=0)


class TestSuiteRunFinished(_AboutArtifact):
    """A test suite ran against an artifact (``customData.artifactId`` names it)."""

    TYPE: ClassVar[str] = "dev.cdevents.testsuiterun.finished.0.3.0"
    TOPIC: ClassVar[str] = topics.EVIDENCE
    KIND: ClassVar[EvidenceKind] = "tests"
    SUMMARY: ClassVar[str] = "test suite finished"
    HINT: ClassVar[str] = (
        "Lockstep attaches test results to an artifact: set customData.artifactId to its purl "
        "(pkg:oci/<service>@sha256:<hex>?tag=<version>, or pkg:generic/<service>@<version>)."
    )
    __test__: ClassVar[bool] = False  # not a pytest class

    subject: TestSuiteRunSubject
    custom_data: TestCounts = Field(alias="customData")
    custom_data_content_type: CustomDataIsJson = "application/json"

    @classmethod
    def build(
        cls,
        *,
        artifact: ArtifactRef,
        suite: str,
        outcome: Literal["success", "failure", "cancel", "error"],
        environment: str = "ci",
        passed: int | None = None,
        failed: int | None = None,
        skipped: int | None = None,
        run_id: str | None = None,
        source: str = "lockstep/cli",
        reason: str | None = None,
    ) -> TestSuiteRunFinished:
        context = cls.new_context(source)
        return cls(
            context=context,
            subject=TestSuiteRunSubject(
                id=run_id or context.id,
                content=TestSuiteRunContent(
                    outcome=outcome,
                    environment=Reference(id=environment),
                    test_suite=TestSuite(id=suite, name=suite),
                    reason=reason,
                ),
            ),
            custom_data=TestCounts(
                artifact_id=artifact.purl(), passed=passed, failed=failed, skipped=skipped
            ),
        )

    def artifact_id(self) -> str:
        return self.custom_data.artifact_id

    def passed(self) -> bool:
        return self.subject.content.outcome == "success"

    def details(self) -> dict[str, Any]:
        c = self.subject.content
        d: dict[str, Any] = {"outcome": c.outcome, "environment": c.environment.id}
        if c.test_suite is not None:
            d["suite"] = c.test_suite.name or c.test_suite.id
        for k in ("passed", "failed", "skipped"):
            v = getattr(self.custom_data, k)
            if v is not None:
                d[k] = v
        if c.reason:
            d["reason"] = c.reason
        return d

    def describe(self) -> str:
        c = self.subject.content
        return f"tests {c.outcome} for {self.artifact_id()} ({self.subject.id})"


# --- security scans (Lockstep custom) ---------------------------------------------------------


class Findings(Model):
    critical: int = Field(default=0, ge=0)
    high: int = Field(default=0, ge=0)
    medium: int = Field(default=0, ge=0)
    low: int = Field(default=0, ge=0)


class ScanContent(Model):
    artifact_id: str = Field(alias="artifactId", min_length=1, description=ARTIFACT_ID_DESCRIPTION)
    scanner: str = Field(min_length=1, description="e.g. trivy, grype, snyk")
    findings: Findings
    report_uri: str | None = Field(default=None, alias="reportUri")


class ScanSubject(Model):
    id: str = Field(min_length=1, description="The scan run's id")
    source: str | None = None
    content: ScanContent


class SecurityScanFinished(_AboutArtifact):
    """A security scanner finished with an artifact: counts of findings by severity."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-securityscan.finished.0.1.0"
    TOPIC: ClassVar[str] = topics.EVIDENCE
    KIND: ClassVar[EvidenceKind] = "security-scan"
    SUMMARY: ClassVar[str] = "security scan finished"

    subject: ScanSubject

    @classmethod
    def build(
        cls,
        *,
        artifact: ArtifactRef,
        scanner: str,
        findings: Findings,
        report_uri: str | None = None,
        run_id: str | None = None,
        source: str = "lockstep/cli",
    ) -> SecurityScanFinished:
        context = cls.new_context(source)
        return cls(
            context=context,
            subject=ScanSubject(
                id=run_id or context.id,
                content=ScanContent(
                    artifact_id=artifact.purl(),
                    scanner=scanner,
                    findings=findings,
                    report_uri=report_uri,
                ),
            ),
        )

    def artifact_id(self) -> str:
        return self.subject.content.artifact_id

    def passed(self) -> bool:
        f = self.subject.content.findings
        return f.critical == 0 and f.high == 0

    def details(self) -> dict[str, Any]:
        c = self.subject.content
        return {"scanner": c.scanner, **c.findings.model_dump()}

    def describe(self) -> str:
        f = self.subject.content.findings
        return (
            f"scan by {self.subject.content.scanner} of {self.artifact_id()}: "
            f"{f.critical} critical, {f.high} high, {f.medium} medium, {f.low} low"
        )


# --- benchmarks (Lockstep custom) -------------------------------------------------------------


class Measurement(Model):
    value: float = Field(description="A finite number (no NaN or infinity)")
    unit: str = Field(min_length=1, description="e.g. ms, req/s, MiB")
    higher_is_better: bool = Field(default=False, alias="higherIsBetter")


class BenchmarkContent(Model):
    artifact_id: str = Field(alias="artifactId", min_length=1, description=ARTIFACT_ID_DESCRIPTION)
    benchmark: str = Field(min_length=1, description="The benchmark's name")
    metrics: dict[str, Measurement] = Field(min_length=1)
    report_uri: str | None = Field(default=None, alias="reportUri")


class BenchmarkSubject(Model):
    id: str = Field(min_length=1, description="The benchmark run's id")
    source: str | None = None
    content: BenchmarkContent


class BenchmarkFinished(_AboutArtifact):
    """A benchmark ran against an artifact; gates compare it with the version in place."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-benchmark.finished.0.1.0"
    TOPIC: ClassVar[str] = topics.EVIDENCE
    KIND: ClassVar[EvidenceKind] = "benchmark"
    SUMMARY: ClassVar[str] = "benchmark finished"

    subject: BenchmarkSubject

    @classmethod
    def build(
        cls,
        *,
        artifact: ArtifactRef,
        benchmark: str,
        metrics: dict[str, Measurement],
        report_uri: str | None = None,
        run_id: str | None = None,
        source: str = "lockstep/cli",
    ) -> BenchmarkFinished:
        context = cls.new_context(source)
        return cls(
            context=context,
            subject=BenchmarkSubject(
                id=run_id or context.id,
                content=BenchmarkContent(
                    artifact_id=artifact.purl(),
                    benchmark=benchmark,
                    metrics=metrics,
                    report_uri=report_uri,
                ),
            ),
        )

    def artifact_id(self) -> str:
        return self.subject.content.artifact_id

    def passed(self) -> bool:
        return True  # a benchmark is a measurement; gates judge it against a baseline

    def details(self) -> dict[str, Any]:
        c = self.subject.content
        return {
            "benchmark": c.benchmark,
            "metrics": {k: m.model_dump(by_alias=True) for k, m in c.metrics.items()},
        }

    def describe(self) -> str:
        c = self.subject.content
        shown = ", ".join(f"{k}={m.value:g}{m.unit}" for k, m in list(c.metrics.items())[:3])
        return f"benchmark {c.benchmark} of {self.artifact_id()}: {shown}"


EVIDENCE_TYPES: tuple[type[_AboutArtifact], ...] = (
    TestSuiteRunFinished,
    SecurityScanFinished,
    BenchmarkFinished,
)
Evidence = TestSuiteRunFinished | SecurityScanFinished | BenchmarkFinished


# --- what the artifacts service says about evidence -------------------------------------------


class RecordedContent(Model):
    artifact_id: str = Field(alias="artifactId", description="The registered artifact's purl")
    service: str
    version: str
    digest: str
    kind: EvidenceKind
    passed: bool
    details: dict[str, Any]
    source_event_id: str = Field(alias="sourceEventId")
    source_event_type: str = Field(alias="sourceEventType")


class RecordedSubject(Model):
    id: str = Field(min_length=1, description="The evidence id (the source event's id)")
    source: str | None = None
    content: RecordedContent


class EvidenceRecorded(CDEvent):
    """Evidence is attached to a registered artifact (emitted when both are known)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-evidence.recorded.0.1.0"
    TOPIC: ClassVar[str] = topics.EVIDENCE
    SUMMARY: ClassVar[str] = "evidence recorded"

    subject: RecordedSubject

    def partition_key(self) -> str:
        return self.subject.content.service

    def artifact_label(self) -> str | None:
        c = self.subject.content
        return f"{c.service}@{c.version}"

    def describe(self) -> str:
        c = self.subject.content
        verdict = "pass" if c.passed else "FAIL"
        return f"evidence {c.kind} {verdict} attached to {c.service}@{c.version}"


class EvidenceRejectedContent(Model):
    artifact_id: str = Field(alias="artifactId")
    code: Literal["digest_mismatch", "invalid_artifact_id", "expired"] = Field(
        description="expired: its artifact was not registered within the wait "
        "(LOCKSTEP_PENDING_EVIDENCE_TTL_S)"
    )
    reason: str
    source_event_id: str = Field(alias="sourceEventId")


class EvidenceRejectedSubject(Model):
    id: str = Field(min_length=1)
    source: str | None = None
    content: EvidenceRejectedContent


class EvidenceRejected(CDEvent):
    """Evidence that cannot belong to the artifact it names (e.g. another digest), or whose
    artifact never came (``expired``)."""

    TYPE: ClassVar[str] = "dev.cdeventsx.lockstep-evidence.rejected.0.1.0"
    TOPIC: ClassVar[str] = topics.EVIDENCE
    SUMMARY: ClassVar[str] = "evidence rejected"

    subject: EvidenceRejectedSubject

    def partition_key(self) -> str:
        return service_of(self.subject.content.artifact_id) or "unknown"

    def describe(self) -> str:
        return f"REJECTED evidence {self.subject.id}: {self.subject.content.reason}"
