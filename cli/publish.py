"""``lockstep publish``: what CI built (``artifact``) and verified (``evidence tests``,
``scan``, ``benchmark``), as events on the mesh."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli.root import Root, of
from events import ArtifactRef, ArtifactRefError, CDEvent, InvalidEvent

publish_app = typer.Typer(help="Publish what CI built and verified.", no_args_is_help=True)
evidence_app = typer.Typer(help="Publish evidence about an artifact.", no_args_is_help=True)
publish_app.add_typer(evidence_app, name="evidence")

Label = Annotated[str, typer.Argument(help="service@version, e.g. checkout@1.4.2")]
Digest = Annotated[
    str | None, typer.Option(help="The artifact's digest, if known (checked on attach)")
]
Traceparent = Annotated[str | None, typer.Option(help="W3C traceparent of the CI job")]
Source = Annotated[str, typer.Option(help="Who publishes (CloudEvents source)")]


def publish(
    root: Root,
    event: CDEvent,
    traceparent: str | None = None,
    *,
    client_id: str = "lockstep-publisher",
) -> None:
    """Publish one event and say so (an event the contract refuses is one line)."""
    from shared.bus import Publisher

    async def go() -> None:
        async with Publisher(root.settings, client_id=client_id) as publisher:
            await publisher.publish(event, traceparent=traceparent)

    try:
        asyncio.run(go())
    except InvalidEvent as exc:
        raise root.fail(exc.reason) from None


def publish_and_say(root: Root, event: CDEvent, traceparent: str | None) -> None:
    publish(root, event, traceparent)
    root.out.print(
        f"published {event.context.type} {event.id}: {event.describe()}", highlight=False
    )


@publish_app.command("artifact")
def publish_artifact(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(help="The service (component) name, e.g. checkout")],
    version: Annotated[str, typer.Option(help="The release version, e.g. 1.4.2")],
    digest: Annotated[str, typer.Option(help="sha256:<64 hex> of the image or file")],
    commit: Annotated[str, typer.Option(help="The commit the build came from")],
    repo: Annotated[str | None, typer.Option(help="The repository URL of the commit")] = None,
    sbom: Annotated[str | None, typer.Option(help="URI of the SBOM")] = None,
    source: Annotated[
        str, typer.Option(help="Who publishes (CloudEvents source)")
    ] = "lockstep/cli",
    traceparent: Annotated[str | None, typer.Option(help="W3C traceparent of the CI build")] = None,
) -> None:
    """Announce a build (CDEvents artifact.packaged)."""
    from events import ArtifactPackaged

    root = of(ctx)
    try:
        event = ArtifactPackaged.build(
            service=service,
            version=version,
            digest=digest,
            commit=commit,
            source=source,
            repo=repo,
            sbom_uri=sbom,
        )
    except ArtifactRefError as exc:
        raise root.fail(exc.reason) from None
    publish_and_say(root, event, traceparent)


def _artifact_option(root: Root, label: str, digest: str | None) -> ArtifactRef:
    ref = root.parse_label(label)
    if digest is None:
        return ref
    from events import check_digest

    try:
        return ArtifactRef(ref.service, ref.version, check_digest(digest))
    except ArtifactRefError as exc:
        raise root.fail(exc.reason) from None


@evidence_app.command("tests")
def publish_tests(
    ctx: typer.Context,
    artifact: Label,
    suite: Annotated[str, typer.Option(help="Test suite name, e.g. integration")],
    outcome: Annotated[str, typer.Option(help="success | failure | cancel | error")],
    passed: Annotated[int | None, typer.Option(min=0)] = None,
    failed: Annotated[int | None, typer.Option(min=0)] = None,
    skipped: Annotated[int | None, typer.Option(min=0)] = None,
    environment: Annotated[str, typer.Option(help="Where the tests ran")] = "ci",
    digest: Digest = None,
    source: Source = "lockstep/cli",
    traceparent: Traceparent = None,
) -> None:
    """A test suite's result (CDEvents testsuiterun.finished)."""
    from events import TestSuiteRunFinished

    root = of(ctx)
    if outcome not in ("success", "failure", "cancel", "error"):
        raise root.fail(f"--outcome {outcome!r}: use success, failure, cancel or error")
    event = TestSuiteRunFinished.build(
        artifact=_artifact_option(root, artifact, digest),
        suite=suite,
        outcome=outcome,  # type: ignore[arg-type]
        environment=environment,
        passed=passed,
        failed=failed,
        skipped=skipped,
        source=source,
    )
    publish_and_say(root, event, traceparent)


@evidence_app.command("scan")
def publish_scan(
    ctx: typer.Context,
    artifact: Label,
    scanner: Annotated[str, typer.Option(help="e.g. trivy")],
    critical: Annotated[int, typer.Option(min=0)] = 0,
    high: Annotated[int, typer.Option(min=0)] = 0,
    medium: Annotated[int, typer.Option(min=0)] = 0,
    low: Annotated[int, typer.Option(min=0)] = 0,
    report: Annotated[str | None, typer.Option(help="URI of the full report")] = None,
    digest: Digest = None,
    source: Source = "lockstep/cli",
    traceparent: Traceparent = None,
) -> None:
    """A security scan's findings by severity."""
    from events import SecurityScanFinished
    from events.evidence import Findings

    root = of(ctx)
    event = SecurityScanFinished.build(
        artifact=_artifact_option(root, artifact, digest),
        scanner=scanner,
        findings=Findings(critical=critical, high=high, medium=medium, low=low),
        report_uri=report,
        source=source,
    )
    publish_and_say(root, event, traceparent)


@evidence_app.command("benchmark")
def publish_benchmark(
    ctx: typer.Context,
    artifact: Label,
    name: Annotated[str, typer.Option(help="The benchmark's name")],
    metric: Annotated[
        list[str],
        typer.Option(help="NAME=VALUE:UNIT[:higher], e.g. p99=12.5:ms or rps=950:req/s:higher"),
    ],
    report: Annotated[str | None, typer.Option(help="URI of the full report")] = None,
    digest: Digest = None,
    source: Source = "lockstep/cli",
    traceparent: Traceparent = None,
) -> None:
    """A benchmark's measurements."""
    from events import BenchmarkFinished
    from events.evidence import Measurement

    root = of(ctx)
    metrics: dict[str, Measurement] = {}
    for m in metric:
        key, _, rest = m.partition("=")
        value, _, tail = rest.partition(":")
        unit, _, direction = tail.partition(":")
        try:
            metrics[key] = Measurement(
                value=float(value), unit=unit, higher_is_better=direction == "higher"
            )
        except ValueError:
            raise root.fail(
                f"--metric {m!r}: write NAME=VALUE:UNIT[:higher], e.g. p99=12.5:ms"
            ) from None
    event = BenchmarkFinished.build(
        artifact=_artifact_option(root, artifact, digest),
        benchmark=name,
        metrics=metrics,
        report_uri=report,
        source=source,
    )
    publish_and_say(root, event, traceparent)
