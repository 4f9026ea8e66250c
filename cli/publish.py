"""``lockstep publish``: what CI built (``artifact``) and verified (``evidence tests``,
``scan``, ``benchmark``), as events on the mesh."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from cli.root import Root, of
from events import ArtifactRef, ArtifactRefError, CDEvent, InvalidEvent
from events.signing import SigningKey

E = TypeVar("E", bound=CDEvent)

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
    signing_key: SigningKey | None = None,
    principal: str = "ci",
) -> None:
    """Publish one event as ``principal`` (infra/access.toml: ``ci`` for what CI built and
    verified) and say so (an event the contract refuses is one line). A decision is signed
    with ``signing_key``, by default the key the command line signs it with
    (``cli.signing.key_for``)."""
    from cli.signing import key_for
    from shared.bus import Publisher, PublishError

    key = signing_key or key_for(root, event)

    async def go() -> None:
        settings = root.settings.as_principal(principal)
        async with Publisher(settings, client_id=client_id, signing_key=key) as publisher:
            await publisher.publish(event, traceparent=traceparent)

    try:
        asyncio.run(go())
    except InvalidEvent as exc:
        raise root.fail(exc.reason, one_line=True) from None
    except PublishError as exc:  # refused by Kafka, Kafka away, or no answer in time
        raise root.fail(f"not published: {exc.reason}", one_line=True) from None
    except OSError as exc:  # Kafka away (a ConnectionError): one line, not a traceback
        raise root.fail(f"not published: {exc}", one_line=True) from None


# The command's options by the field of the event they fill (the last part of its path).
_OPTION_OF = {
    "source": "--source",
    "testSuite": "--suite",
    "test_suite": "--suite",
    "scanner": "--scanner",
    "benchmark": "--name",
    "change": "--commit",
    "environment": "--environment",
    "reportUri": "--report",
    "report_uri": "--report",
    "sbom": "--sbom",
}


def built(root: Root, make: Callable[[], E], parts: dict[str, str] | None = None) -> E:
    """The event ``make`` builds from the options, or one line saying which option is wrong
    and how (never a traceback: the contract's refusal, told in the command's terms).
    ``parts``: the option that fills each part (a model built on its own, by its name)."""
    try:
        return make()
    except ArtifactRefError as exc:
        raise root.fail(exc.reason, one_line=True) from None
    except ValidationError as exc:
        said = []
        for err in exc.errors(include_url=False):
            names = [str(p) for p in err["loc"]]
            option = next((_OPTION_OF[n] for n in reversed(names) if n in _OPTION_OF), None)
            option = option or (parts or {}).get(exc.title)
            where = option or ".".join(names) or "value"
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "string_too_short":
                message = "must not be empty"
            elif err["type"] == "string_pattern_mismatch" and option == "--source":
                message = "must be a URI-reference, without spaces (e.g. ci/github/acme/shop)"
            said.append(f"{where}: {message}")
        raise root.fail("; ".join(dict.fromkeys(said)), one_line=True) from None


def publish_and_say(
    root: Root,
    event: CDEvent,
    traceparent: str | None,
    *,
    signing_key: SigningKey | None = None,
    principal: str = "ci",
) -> None:
    publish(root, event, traceparent, signing_key=signing_key, principal=principal)
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
    author: Annotated[
        str | None,
        typer.Option(help="Who made the change (a four-eyes gate refuses their approval)"),
    ] = None,
    source: Annotated[
        str, typer.Option(help="Who publishes (CloudEvents source)")
    ] = "lockstep/cli",
    traceparent: Annotated[str | None, typer.Option(help="W3C traceparent of the CI build")] = None,
) -> None:
    """Announce a build (CDEvents artifact.packaged)."""
    from events import ArtifactPackaged
    from events.artifacts import AUTHOR_MAX_CHARS

    root = of(ctx)
    if author is not None and not 0 < len(author.strip()) <= AUTHOR_MAX_CHARS:
        raise root.fail(f"--author: a name of 1 to {AUTHOR_MAX_CHARS} characters", one_line=True)
    event = built(
        root,
        lambda: ArtifactPackaged.build(
            service=service,
            version=version,
            digest=digest,
            commit=commit,
            source=source,
            repo=repo,
            sbom_uri=sbom,
            author=author,
        ),
        {"Reference": "--commit", "SbomRef": "--sbom"},
    )
    publish_and_say(root, event, traceparent)


def _artifact_option(root: Root, label: str, digest: str | None) -> ArtifactRef:
    ref = root.parse_label(label)
    if digest is None:
        return ref
    from events import check_digest

    try:
        return ArtifactRef(ref.service, ref.version, check_digest(digest))
    except ArtifactRefError as exc:
        raise root.fail(exc.reason, one_line=True) from None


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
    ref = _artifact_option(root, artifact, digest)
    event = built(
        root,
        lambda: TestSuiteRunFinished.build(
            artifact=ref,
            suite=suite,
            outcome=outcome,  # type: ignore[arg-type]
            environment=environment,
            passed=passed,
            failed=failed,
            skipped=skipped,
            source=source,
        ),
        {"TestSuite": "--suite", "Reference": "--environment"},
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
    ref = _artifact_option(root, artifact, digest)
    event = built(
        root,
        lambda: SecurityScanFinished.build(
            artifact=ref,
            scanner=scanner,
            findings=Findings(critical=critical, high=high, medium=medium, low=low),
            report_uri=report,
            source=source,
        ),
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
    ref = _artifact_option(root, artifact, digest)
    metrics: dict[str, Measurement] = {}
    for m in metric:
        key, value, unit, higher = _metric(root, m)
        if key in metrics:
            raise root.fail(f"--metric {m!r}: {key} is given twice; give each metric once")
        metrics[key] = Measurement(value=value, unit=unit, higher_is_better=higher)
    event = built(
        root,
        lambda: BenchmarkFinished.build(
            artifact=ref, benchmark=name, metrics=metrics, report_uri=report, source=source
        ),
    )
    publish_and_say(root, event, traceparent)


def _metric(root: Root, written: str) -> tuple[str, float, str, bool]:
    """``NAME=VALUE:UNIT[:higher]`` -> its parts, or one line saying what is wrong."""
    form = "write NAME=VALUE:UNIT[:higher], e.g. p99=12.5:ms or rps=950:req/s:higher"
    key, eq, rest = written.partition("=")
    value, _, tail = rest.partition(":")
    unit, _, direction = tail.partition(":")
    if not eq or not key.strip() or not unit or direction not in ("", "higher", "lower"):
        raise root.fail(f"--metric {written!r}: {form}")
    try:
        number = float(value)
    except ValueError:
        raise root.fail(f"--metric {written!r}: {value!r} is not a number; {form}") from None
    if not math.isfinite(number):
        raise root.fail(
            f"--metric {written!r}: the value must be a finite number, not {value!r} "
            "(JSON has no NaN or infinity); leave out a metric that was not measured"
        )
    return key, number, unit, direction == "higher"
