"""The demo (``scripts/demo``): every service up, a sample build pushed through, its trace printed.

The demo plays the CI system: it opens a "ci build" span (so the trace starts at CI, as it does
when a real CI passes its traceparent), publishes one piece of evidence *before* the build it is
about (events may come out of order), the build, two more pieces of evidence, and then the same
version again with another digest, which the registry must refuse.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.markup import escape

from cli.views import describe_record, print_artifact, print_env_status, print_trace
from events import (
    ArtifactPackaged,
    ArtifactRef,
    BenchmarkFinished,
    CDEvent,
    InvalidEvent,
    KafkaRecord,
    SecurityScanFinished,
    ServiceDeployed,
    TestSuiteRunFinished,
    decode,
    short_type,
    topics,
)
from events.evidence import Findings, Measurement
from events.flags import FlagChanged, FlagChangeRequested
from events.incidents import IncidentDetected
from events.kafka import Unreadable, fetch_safely
from events.policy import PolicyUpdated
from events.signals import SignalObserved
from events.signing import KeyStore
from policy import load as load_release_model
from policy import policy_updated
from services.catalog import SERVICES
from services.flags.api import Change, open_flags, parse_schedule
from services.gates.api import approval as approval_of
from services.promotion.api import what_runs_where
from shared.bus import Publisher
from shared.bus.admin import ensure_topics, partitions_of
from shared.bus.kafka_client import kafka_consumer
from shared.settings import Settings
from shared.telemetry import current_trace_headers, tracer, tracer_provider

WATCHED = (
    topics.ARTIFACTS,
    topics.EVIDENCE,
    topics.GATES,
    topics.POLICIES,
    topics.PROMOTIONS,
    topics.DEPLOYMENTS,
    topics.FLAGS,
    topics.INCIDENTS,
    topics.SECURITY,
    topics.DLQ,
)
CHECKOUT = Path(__file__).resolve().parents[1]
RELEASE_MODEL = CHECKOUT / "infra" / "demo-release-model.yaml"
STATE = CHECKOUT / ".lockstep"  # the checkout's git-ignored state, as infra/lockstep-infra's
PERSON = "release-manager"  # who approves production in the demo, with a person key of theirs
ON_CALL = "on-call"  # who resolves the demo's incident, with a key of their own


def run_demo(out: Console, settings: Settings) -> int:
    created = asyncio.run(ensure_topics(settings))
    if created:
        out.print(f"created topics: {', '.join(created)}")
    store = KeyStore(settings.key_dir)
    made = store.init(PERSON)  # as `lockstep keys init` does
    made += store.init(ON_CALL)
    if made:
        out.print(f"created signing keys ({', '.join(k.role for k in made)}) in {settings.key_dir}")
    log_path = STATE / "demo-services.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out.print(f"starting services: {', '.join(SERVICES)} (log: {log_path})")
    out.print("starting the reference deployer agent for every environment")
    deployer_args = ["deployer", "--agent", "demo", "--state-dir", str(STATE / "deployer")]
    for environment in ("dev", "staging", "prod-eu", "prod-us"):
        deployer_args += ["--env", environment]
    with log_path.open("ab") as log:
        services = subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", "run", "all"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        agent = subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", *deployer_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        label, ok = asyncio.run(_push_sample(out, settings))
    finally:
        for process in (agent, services):
            process.send_signal(signal.SIGTERM)
        code = max(services.wait(timeout=60), agent.wait(timeout=60))
        out.print(f"services stopped (exit {code})")
    out.print()
    print_env_status(out, settings)
    out.print()
    print_artifact(out, settings, ArtifactRef.parse_label(label))
    out.print()
    if not print_trace(out, settings, label, wait=5.0):
        out.print(f"[red]no trace found for {label}[/red]")
        return 1
    return 0 if ok and code == 0 else 1


async def _push_sample(out: Console, settings: Settings) -> tuple[str, bool]:
    stamp = int(time.time())
    version = f"1.4.{stamp}"
    digest = "sha256:" + hashlib.sha256(f"checkout {version}".encode()).hexdigest()
    other = "sha256:" + hashlib.sha256(f"checkout {version} rebuilt".encode()).hexdigest()
    checkout = ArtifactRef("checkout", version, digest)
    # checkout needs payments>=2.3 in each environment first; both ride the train "shop"
    payments = ArtifactRef(
        "payments",
        f"2.3.{stamp}",
        "sha256:" + hashlib.sha256(f"payments {stamp}".encode()).hexdigest(),
    )
    labels = {checkout.label, payments.label}
    mesh = _Mesh(out, settings, await _watch(settings), labels)
    provider = tracer_provider(settings, "ci")
    ci = tracer(provider)
    try:
        policy = _policy_event()
        mesh.policy_id = policy.id
        with ci.start_as_current_span(
            f"ci build {checkout.label}", attributes={"lockstep.artifact": checkout.label}
        ):
            trace = current_trace_headers().get("traceparent")
            # Each writer is its own Kafka principal (infra/access.toml), as in a real set-up.
            platform_key = KeyStore(settings.key_dir).signing_key("platform")
            async with Publisher(
                settings.as_principal("platform"),
                client_id="lockstep-demo-platform",
                signing_key=platform_key,
            ) as platform:
                await platform.publish(policy)  # signed with the platform key
                out.print(f"[dim]platform ->[/dim] {escape(policy.describe())}", highlight=False)
            async with Publisher(
                settings.as_principal("ci"), client_id="lockstep-demo-ci"
            ) as ci_pub:
                for event in _ci_events(checkout, payments, other):
                    await ci_pub.publish(event, traceparent=trace)
                    out.print(f"[dim]CI  ->[/dim] {escape(event.describe())}", highlight=False)
        everywhere = [
            (ref.label, env) for ref in (checkout, payments) for env in ("dev", "staging")
        ]
        if not await mesh.until(lambda: mesh.deployed_all(everywhere), 90):
            return checkout.label, False
        out.print("[dim]production gates ask for an approval; the release manager gives it[/dim]")
        manager = KeyStore(settings.key_dir).person_key(PERSON)  # the release manager's key
        async with Publisher(
            settings.as_principal("person"), client_id="lockstep-demo-people", signing_key=manager
        ) as people:
            for ref in (payments, checkout):
                for env in ("prod-eu", "prod-us"):
                    approval = approval_of(
                        ref.service, ref.version, environment=env, by=PERSON,
                        approved=True, source="demo/people",
                    )  # fmt: skip
                    await people.publish(approval)
                    out.print(
                        f"[dim]person ->[/dim] {escape(approval.describe())}", highlight=False
                    )
        production = [
            (ref.label, env) for ref in (checkout, payments) for env in ("prod-eu", "prod-us")
        ]
        ok = await mesh.until(lambda: mesh.deployed_all(production), 90)
        ok = ok and await _ledger_shows(settings, production, timeout_s=15)
        ok = ok and await _flags(out, settings, mesh, checkout)
    finally:
        await mesh.watcher.stop()
        provider.shutdown()
    return checkout.label, ok


def _ci_events(checkout: ArtifactRef, payments: ArtifactRef, other: str) -> list[CDEvent]:
    """What CI sends: payments, then checkout with one piece of evidence before its build,
    then the same checkout version rebuilt with another digest (which must be refused)."""

    def bench(ref: ArtifactRef, p99: float) -> BenchmarkFinished:
        return BenchmarkFinished.build(
            artifact=ref,
            benchmark=f"{ref.service}-load",
            metrics={
                "p99_latency": Measurement(value=p99, unit="ms"),
                "throughput": Measurement(value=1250, unit="req/s", higher_is_better=True),
            },
            source="demo/ci",
        )

    def scan(ref: ArtifactRef) -> SecurityScanFinished:
        return SecurityScanFinished.build(
            artifact=ref, scanner="trivy", findings=Findings(medium=2, low=7), source="demo/ci"
        )

    def packaged(ref: ArtifactRef, digest: str, commit: str) -> ArtifactPackaged:
        return ArtifactPackaged.build(
            service=ref.service, version=ref.version, digest=digest, commit=commit,
            repo=f"https://git.example.com/shop/{ref.service}", source="demo/ci",
        )  # fmt: skip

    def tests(ref: ArtifactRef) -> TestSuiteRunFinished:
        return TestSuiteRunFinished.build(
            artifact=ref, suite="integration", outcome="success", passed=212, failed=0,
            source="demo/ci",
        )  # fmt: skip

    sha = hashlib.sha1
    return [
        packaged(payments, payments.digest or "", sha(payments.version.encode()).hexdigest()),
        tests(payments),
        scan(payments),
        bench(payments, 18.0),
        tests(checkout),  # evidence before its build: kept, attached when the build arrives
        packaged(checkout, checkout.digest or "", sha(checkout.version.encode()).hexdigest()),
        scan(checkout),
        bench(checkout, 41.5),
        packaged(checkout, other, "f" * 40),
    ]


async def _ledger_shows(
    settings: Settings, wanted: list[tuple[str, str]], timeout_s: float
) -> bool:
    """Until the promotion service's ledger has taken in the deployers' reports."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        have = {(p.label, p.environment) for p in await what_runs_where(settings)}
        if set(wanted) <= have:
            return True
        await asyncio.sleep(0.2)
    return False


class _Mesh:
    """Prints what the mesh says about the demo's builds, and remembers where they run."""

    def __init__(
        self, out: Console, settings: Settings, watcher: AIOKafkaConsumer, labels: set[str]
    ) -> None:
        self.out = out
        self.settings = settings
        self.watcher = watcher
        self.labels = labels
        self.policy_id = ""
        self.running: set[tuple[str, str]] = set()
        self.flags: set[str] = set()  # <environment>/<key> of the demo's flags
        self.flags_seen: list[str] = []  # their flag events, as they pass
        self.incidents: list[str] = []  # incidents about the demo's builds

    def deployed_all(self, wanted: list[tuple[str, str]]) -> bool:
        return set(wanted) <= self.running

    async def until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                self.out.print(f"[red]the mesh did not get there in {timeout_s:g}s[/red]")
                return False
            for part in (await fetch_safely(self.watcher, timeout_ms=500)).values():
                for item in part.items():
                    if isinstance(item, Unreadable):  # the Kafka client could not decode it
                        self.out.print(f"[red]mesh[/red] UNREADABLE {escape(item.error)}")
                    else:
                        self._see(item)
        return True

    def _see(self, record: KafkaRecord) -> None:
        kind = short_type(record.header("ce_type") or "")
        if kind == "artifact.packaged" or kind.endswith(".finished") or kind == "approval.updated":
            return  # what CI and people sent, printed as they sent it
        if record.topic.endswith("." + topics.DLQ):
            self.out.print(f"[red]mesh[/red] {escape(describe_record(record, 10**9))}")
            return
        try:
            event = decode(record, max_bytes=self.settings.max_event_bytes).event
        except InvalidEvent:
            return
        flag = (
            isinstance(event, FlagChanged | FlagChangeRequested) and event.subject.id in self.flags
        )
        if event.artifact_label() not in self.labels and event.id != self.policy_id and not flag:
            return  # another build (earlier runs, other teams)
        if isinstance(event, ServiceDeployed):
            self.running.add((event.ref().label, event.subject.content.environment.id))
        if isinstance(event, IncidentDetected):
            self.incidents.append(event.subject.id)
        if flag:
            self.flags_seen.append(event.id)
        line = describe_record(record, self.settings.max_event_bytes)
        self.out.print(f"[bold]mesh[/bold] {escape(line)}", highlight=False)


async def _watch(settings: Settings) -> AIOKafkaConsumer:
    """A consumer positioned at the current end of the watched topics (so nothing is missed)."""
    viewer = settings.as_principal("viewer")  # read-only (infra/access.toml)
    consumer = kafka_consumer(viewer, enable_auto_commit=False)
    await consumer.start()
    partitions = await partitions_of(viewer, [settings.topic(t) for t in WATCHED])
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return consumer


async def _flags(out: Console, settings: Settings, mesh: _Mesh, checkout: ArtifactRef) -> bool:
    """The payments team ships checkout's new flow dark behind a release flag and rolls it out
    to a quarter of users; then checkout's errors breach the release model's criterion, and
    the incidents service pulls the kill switch through Kafka."""
    out.print("[dim]the payments team ships the new checkout flow dark, behind flags[/dim]")
    flag_set = {
        "flags": {
            "new-checkout-flow": {
                "state": "ENABLED", "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "metadata": {"type": "release", "owner": "payments", "release": checkout.label},
            },
            "checkout-enabled": {
                "state": "ENABLED", "variants": {"on": True, "off": False},
                "defaultVariant": "on", "metadata": {"type": "kill-switch", "owner": "payments"},
            },
        }
    }  # fmt: skip
    mesh.flags = {f"prod-eu/{key}" for key in flag_set["flags"]}
    provider = tracer_provider(settings, "payments-team")
    try:
        async with open_flags(settings, tracer=tracer(provider)) as flags:
            await flags.import_flag_set(
                "prod-eu", flag_set, by="payments-team", reason="ship dark", source="cli"
            )
            rollout = Change(
                "prod-eu", "new-checkout-flow", "rollout", "payments-team", "a quarter of users",
                "cli", variant="on", steps=parse_schedule("25%,50%@1h,100%@4h"),
            )  # fmt: skip
            await flags.apply(rollout)
            key = await flags.create_key("prod-eu", "evaluate", "demo")
    finally:
        provider.shutdown()
    url = f"http://127.0.0.1:{settings.flags_http_port}/environments/prod-eu/ofrep/v1/"
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:

        async def evaluate(flag: str, user: str) -> dict[str, object]:
            r = await http.post(f"evaluate/flags/{flag}", json={"context": {"targetingKey": user}})
            body: dict[str, object] = r.json()
            return body

        if not await mesh.until(lambda: len(mesh.flags_seen) >= 3, 30):
            return False
        for user in ("ann", "bob", "cem", "dia"):
            got = await evaluate("new-checkout-flow", user)
            out.print(f"[dim]app (OFREP) ->[/dim] new-checkout-flow for {user}: "
                      f"{got.get('value')} ({got.get('reason')})", highlight=False)  # fmt: skip
        out.print("[dim]checkout's errors climb in prod-eu; Prometheus reports them[/dim]")
        now = datetime.now(UTC)
        async with Publisher(
            settings.as_principal("monitoring"), client_id="lockstep-demo-prometheus"
        ) as prometheus:
            for seconds, value in ((-61, 0.07), (0, 0.09)):  # above 0.05 for over a minute
                bad = SignalObserved.build(
                    service="checkout", environment="prod-eu", metric="error_rate",
                    value=value, window_seconds=60, source="prometheus",
                    observed_at=now + timedelta(seconds=seconds),
                )  # fmt: skip
                await prometheus.publish(bad)
                out.print(f"[dim]prometheus ->[/dim] {escape(bad.describe())}", highlight=False)
        if not await mesh.until(lambda: len(mesh.flags_seen) >= 5 and bool(mesh.incidents), 30):
            return False
        for _ in range(50):
            got = await evaluate("checkout-enabled", "ann")
            if got.get("reason") == "DISABLED":
                out.print("[dim]app (OFREP) ->[/dim] checkout-enabled: DISABLED (the app's own "
                          "default applies)", highlight=False)  # fmt: skip
                return _resolve(out, mesh.incidents[0])
            await asyncio.sleep(0.1)
    out.print("[red]the kill switch did not reach the app[/red]")
    return False


def _resolve(out: Console, incident_id: str) -> bool:
    """On-call resolves the incident (so the next demo run starts clean)."""
    done = subprocess.run(
        [sys.executable, "-P", "-m", "cli", "incidents", "resolve", incident_id,
         "--by", ON_CALL, "--reason", "payments provider recovered"],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )  # fmt: skip
    out.print(f"[dim]on-call ->[/dim] lockstep incidents resolve {incident_id}: "
              f"{escape(done.stdout.strip() or done.stderr.strip())}", highlight=False)  # fmt: skip
    return done.returncode == 0


def _policy_event() -> PolicyUpdated:
    return policy_updated(
        load_release_model(RELEASE_MODEL),
        updated_by="platform-team",
        source="infra/demo-release-model.yaml",
        sender="demo/platform-team",
    )


def main() -> int:
    """Run the demo against the infrastructure ``infra/lockstep-infra up`` started."""
    return run_demo(Console(width=None if sys.stdout.isatty() else 160), Settings())


if __name__ == "__main__":
    sys.exit(main())
