"""``lockstep``: the command line of Lockstep."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.flags import flags_app
from cli.incidents import drill_app, hold_app, incidents_app
from events import ArtifactRef, ArtifactRefError, InvalidEvent
from shared.settings import Settings

app = typer.Typer(help="Lockstep: coordinate releases across many teams.", no_args_is_help=True)
publish_app = typer.Typer(help="Publish what CI built and verified.", no_args_is_help=True)
evidence_app = typer.Typer(help="Publish evidence about an artifact.", no_args_is_help=True)
artifacts_app = typer.Typer(help="The registry of immutable builds.", no_args_is_help=True)
infra_app = typer.Typer(
    help="Local Kafka and Postgres (infra/lockstep-infra).", no_args_is_help=True
)
schema_app = typer.Typer(
    help="The event contract as JSON Schema and AsyncAPI.", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics of a namespace.", no_args_is_help=True)
model_app = typer.Typer(help="The release model (policy as code).", no_args_is_help=True)
app.add_typer(publish_app, name="publish")
publish_app.add_typer(evidence_app, name="evidence")
app.add_typer(artifacts_app, name="artifacts")
app.add_typer(infra_app, name="infra")
app.add_typer(schema_app, name="schema")
app.add_typer(topics_app, name="topics")
app.add_typer(model_app, name="model")
app.add_typer(flags_app, name="flags")
app.add_typer(incidents_app, name="incidents")
app.add_typer(drill_app, name="drill")
app.add_typer(hold_app, name="hold")

# Piped output (CI logs) is not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
REPO_ROOT = Path(__file__).resolve().parents[2]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def parse_label(label: str) -> ArtifactRef:
    try:
        return ArtifactRef.parse_label(label)
    except ArtifactRefError as exc:
        raise fail(exc.reason) from None


# --- infra ----------------------------------------------------------------------------------


def _infra(command: str) -> None:
    script = REPO_ROOT / "infra" / "lockstep-infra"
    if not script.exists():
        raise fail(
            f"{script} not found: `lockstep infra` needs a checkout of the Lockstep repository"
        )
    raise typer.Exit(subprocess.call(["bash", str(script), command]))


@infra_app.command("up")
def infra_up() -> None:
    """Start Kafka (KRaft) and Postgres, create the topics, wait until both answer."""
    _infra("up")


@infra_app.command("down")
def infra_down() -> None:
    """Stop what `up` started, and nothing else."""
    _infra("down")


@infra_app.command("status")
def infra_status() -> None:
    """Is each part up?"""
    _infra("status")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the namespace's topics that are missing."""
    from shared.bus.admin import ensure_topics

    settings = Settings()
    created = asyncio.run(ensure_topics(settings))
    out.print(
        f"{len(created)} topic(s) created in namespace {settings.namespace}: "
        f"{', '.join(created) or '-'}"
    )


# --- publish --------------------------------------------------------------------------------


def _publish(event: object, traceparent: str | None) -> None:
    from events import CDEvent
    from shared.bus import Publisher

    assert isinstance(event, CDEvent)
    settings = Settings()

    async def go() -> None:
        async with Publisher(settings) as publisher:
            await publisher.publish(event, traceparent=traceparent)

    try:
        asyncio.run(go())
    except InvalidEvent as exc:
        raise fail(exc.reason) from None
    out.print(f"published {event.context.type} {event.id}: {event.describe()}", highlight=False)


@publish_app.command("artifact")
def publish_artifact(
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
        raise fail(exc.reason) from None
    _publish(event, traceparent)


def _artifact_option(label: str, digest: str | None) -> ArtifactRef:
    ref = parse_label(label)
    if digest is None:
        return ref
    from events import check_digest

    try:
        return ArtifactRef(ref.service, ref.version, check_digest(digest))
    except ArtifactRefError as exc:
        raise fail(exc.reason) from None


Label = Annotated[str, typer.Argument(help="service@version, e.g. checkout@1.4.2")]
Digest = Annotated[
    str | None, typer.Option(help="The artifact's digest, if known (checked on attach)")
]
Traceparent = Annotated[str | None, typer.Option(help="W3C traceparent of the CI job")]
Source = Annotated[str, typer.Option(help="Who publishes (CloudEvents source)")]


@evidence_app.command("tests")
def publish_tests(
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

    if outcome not in ("success", "failure", "cancel", "error"):
        raise fail(f"--outcome {outcome!r}: use success, failure, cancel or error")
    event = TestSuiteRunFinished.build(
        artifact=_artifact_option(artifact, digest),
        suite=suite,
        outcome=outcome,  # type: ignore[arg-type]
        environment=environment,
        passed=passed,
        failed=failed,
        skipped=skipped,
        source=source,
    )
    _publish(event, traceparent)


@evidence_app.command("scan")
def publish_scan(
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

    event = SecurityScanFinished.build(
        artifact=_artifact_option(artifact, digest),
        scanner=scanner,
        findings=Findings(critical=critical, high=high, medium=medium, low=low),
        report_uri=report,
        source=source,
    )
    _publish(event, traceparent)


@evidence_app.command("benchmark")
def publish_benchmark(
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
            raise fail(
                f"--metric {m!r}: write NAME=VALUE:UNIT[:higher], e.g. p99=12.5:ms"
            ) from None
    event = BenchmarkFinished.build(
        artifact=_artifact_option(artifact, digest),
        benchmark=name,
        metrics=metrics,
        report_uri=report,
        source=source,
    )
    _publish(event, traceparent)


# --- artifacts ------------------------------------------------------------------------------


@artifacts_app.command("list")
def artifacts_list(
    service: Annotated[str | None, typer.Option(help="Only this service")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
) -> None:
    """Registered artifacts, newest first."""
    from cli import views

    views.print_artifact_list(out, Settings(), service, limit)


@artifacts_app.command("show")
def artifacts_show(artifact: Label) -> None:
    """One artifact: digest, commit, status, evidence and any rejections."""
    from cli import views

    ref = parse_label(artifact)
    if not views.print_artifact(out, Settings(), ref):
        raise fail(f"nothing known about {ref.label}", code=1)


# --- tail, trace ----------------------------------------------------------------------------


@app.command()
def tail(
    topics: Annotated[
        list[str] | None, typer.Argument(help="Logical topics (default: all)")
    ] = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after this many records")] = None,
    idle: Annotated[float | None, typer.Option(help="Stop after this many idle seconds")] = None,
) -> None:
    """Follow events as they happen, one readable line each."""
    from cli import views

    asyncio.run(views.tail(out, Settings(), topics or [], from_beginning, count, idle))


@app.command()
def trace(
    artifact: Label,
    wait: Annotated[float, typer.Option(help="Seconds to wait for spans to appear")] = 0.0,
) -> None:
    """The span tree of a release so far (from the local span store)."""
    from cli import views

    ref = parse_label(artifact)
    if not views.print_trace(out, Settings(), ref.label, wait):
        raise fail(
            f"no spans about {ref.label} in {Settings().trace_dir} (with an OTLP collector, look "
            "there; spans reach the local store about a second after they end)",
            code=1,
        )


# --- run ------------------------------------------------------------------------------------


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="A service name, or `all` for every service")],
) -> None:
    """Run a service until SIGTERM (then drain, commit, exit 0); `all`: each in a process."""
    from services.catalog import SERVICES, spec

    logging.basicConfig(
        level=os.environ.get("LOCKSTEP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if service == "all":
        raise typer.Exit(_run_all(list(SERVICES)))
    try:
        service_spec = spec(service)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    from shared.service import serve

    asyncio.run(serve(service_spec, Settings()))


def _run_all(names: list[str]) -> int:
    """One child process per service; SIGTERM/SIGINT is passed on and every child awaited."""
    children = {
        name: subprocess.Popen([sys.executable, "-m", "cli", "run", name]) for name in names
    }
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        for name, child in list(children.items()):
            code = child.poll()
            if code is None:
                continue
            del children[name]
            if code != 0:
                err.print(f"service {name} exited with {code}")
                worst = worst or code
                if not stopping:
                    forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return worst


def _decide(artifact: str, env: str, by: str, decision: str) -> None:
    from events import ApprovalUpdated

    ref = parse_label(artifact)
    event = ApprovalUpdated.build(
        service=ref.service, version=ref.version, environment=env, by=by,
        decision="approved" if decision == "approve" else "rejected",
    )  # fmt: skip
    _publish(event, None)


@app.command()
def approve(
    artifact: Label,
    env: Annotated[str, typer.Option(help="The environment the build is approved for")],
    by: Annotated[str, typer.Option(help="Who approves")],
) -> None:
    """Approve a build for an environment whose gate asks for approval."""
    _decide(artifact, env, by, "approve")


@app.command()
def reject(
    artifact: Label,
    env: Annotated[str, typer.Option(help="The environment the build is rejected for")],
    by: Annotated[str, typer.Option(help="Who rejects")],
) -> None:
    """Reject a build for an environment: its gate fails, naming who."""
    _decide(artifact, env, by, "reject")


@app.command()
def deployer(
    agent: Annotated[str, typer.Option(help="This agent's name (its consumer group)")],
    env: Annotated[list[str], typer.Option(help="An environment it deploys to (repeatable)")],
    state_dir: Annotated[Path, typer.Option(help="Where it records what runs where")] = Path(
        ".lockstep/deployer"
    ),
    fail: Annotated[list[str] | None, typer.Option(help="Fail deployments of this service")] = None,
) -> None:
    """Run the reference deployer agent until SIGTERM."""
    from services.deployer import DeployerAgent
    from services.deployer.reference import LocalStateDeployer

    logging.basicConfig(
        level=os.environ.get("LOCKSTEP_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from shared.telemetry import tracer, tracer_provider

        settings = Settings()
        provider = tracer_provider(settings, f"deployer-{agent}")
        target = LocalStateDeployer(state_dir, fail_for=set(fail or []))
        try:
            await DeployerAgent(
                target, settings, agent=agent, environments=env, tracer=tracer(provider)
            ).run(stop)
        finally:
            provider.shutdown()

    asyncio.run(go())


env_app = typer.Typer(help="Environments and what runs in them.", no_args_is_help=True)
app.add_typer(env_app, name="env")


@env_app.command("status")
def env_status() -> None:
    """What runs where: services x environments, with versions and digests."""
    from cli import views

    views.print_env_status(out, Settings())


# --- schema ---------------------------------------------------------------------------------


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Where to write the schemas")],
) -> None:
    """One JSON Schema per event type and an AsyncAPI 3.0 document of topics and messages."""
    from events.schema import export

    settings = Settings()
    written = export(
        directory,
        settings.namespace,
        bootstrap=settings.kafka_bootstrap,
        partitions=settings.topic_partitions,
    )
    out.print(f"wrote {len(written)} files to {directory}")


# --- release model ---------------------------------------------------------------------------


@model_app.command("validate")
def model_validate(
    file: Annotated[Path, typer.Argument(help="The release model, e.g. infra/release-model.yaml")],
) -> None:
    """Check a release model; every problem is printed with its file and line."""
    from policy import ModelError, load

    if not file.is_file():
        raise fail(f"{file}: no such file")
    try:
        loaded = load(file)
    except ModelError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, markup=False)
        problems = len(exc.problems)
        raise fail(f"{file}: {problems} problem(s); the model is refused", code=1) from None
    m = loaded.model
    out.print(
        f"{file}: valid (sha256 {loaded.sha256}): {len(m.environments)} environments, "
        f"{len(m.gates)} gates, {len(m.trains)} trains, {len(m.windows)} windows",
        highlight=False,
    )


@model_app.command("publish")
def model_publish(
    file: Annotated[Path, typer.Argument(help="The release model to put in force")],
    by: Annotated[str, typer.Option(help="Who changes it (recorded with the change)")],
) -> None:
    """Validate a release model and put it in force (a policy.updated event)."""
    from policy import ModelError, load, policy_updated

    try:
        loaded = load(file)
    except (ModelError, OSError) as exc:
        raise fail(f"{file}: refused:\n{exc}", code=1) from None
    _publish(policy_updated(loaded, updated_by=by, source=str(file)), None)


if __name__ == "__main__":
    app()
