"""``lockstep demo``: every service up, a sample build pushed through, its trace printed.

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
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.markup import escape

from events import (
    ArtifactPackaged,
    ArtifactRef,
    BenchmarkFinished,
    InvalidEvent,
    KafkaRecord,
    SecurityScanFinished,
    TestSuiteRunFinished,
    decode,
    short_type,
    topics,
)
from events.evidence import Findings, Measurement
from events.policy import PolicyUpdated
from services.catalog import SERVICES
from services.cli.views import describe_record, print_artifact, print_trace
from shared.bus import Publisher
from shared.bus.admin import ensure_topics, partitions_of
from shared.bus.consumer import record_from_kafka
from shared.release_model import load as load_release_model
from shared.release_model import policy_updated
from shared.settings import Settings
from shared.telemetry import current_trace_headers, tracer, tracer_provider

WATCHED = (
    topics.ARTIFACTS,
    topics.EVIDENCE,
    topics.GATES,
    topics.POLICIES,
    topics.PROMOTIONS,
    topics.DEPLOYMENTS,
    topics.DLQ,
)
RELEASE_MODEL = Path(__file__).resolve().parents[2] / "infra" / "release-model.yaml"


def run_demo(out: Console, settings: Settings) -> int:
    created = asyncio.run(ensure_topics(settings))
    if created:
        out.print(f"created topics: {', '.join(created)}")
    log_path = Path(".lockstep/demo-services.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out.print(f"starting services: {', '.join(SERVICES)} (log: {log_path})")
    out.print("starting the reference deployer agent for every environment")
    deployer_args = ["deployer", "--agent", "demo", "--state-dir", ".lockstep/deployer"]
    for environment in ("dev", "staging", "prod-eu", "prod-us"):
        deployer_args += ["--env", environment]
    with log_path.open("ab") as log:
        services = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "run", "all"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *deployer_args],
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
    ref = ArtifactRef("checkout", version, digest)
    label = ref.label
    # checkout needs payments>=2.3 in each environment first (infra/release-model.yaml)
    payments = ArtifactRef(
        "payments",
        f"2.3.{stamp}",
        "sha256:" + hashlib.sha256(f"payments {stamp}".encode()).hexdigest(),
    )

    watcher = await _watch(settings)
    provider = tracer_provider(settings, "ci")
    ci = tracer(provider)
    # dev has no gate: it passes on registration, is promoted and deployed. staging waits
    # for 10 min of soak in dev, production for soak and an approval (not in the demo yet).
    expected = {
        "policy.updated": 1,
        "artifact.published": 2,
        "evidence.recorded": 5,
        "artifact.rejected": 1,
        "gate.passed": 2,
        "promotion.approved": 2,
        "service.deployed": 2,
    }
    seen: dict[str, int] = {}
    try:
        with ci.start_as_current_span(f"ci build {label}", attributes={"lockstep.artifact": label}):
            trace = current_trace_headers()
            async with Publisher(settings, client_id="lockstep-demo-ci") as ci_pub:
                policy = _policy_event()
                await ci_pub.publish(policy)
                out.print(f"[dim]platform ->[/dim] {escape(policy.describe())}", highlight=False)
                steps = [
                    ArtifactPackaged.build(
                        service="payments",
                        version=payments.version,
                        digest=payments.digest or "",
                        commit=hashlib.sha1(payments.version.encode()).hexdigest(),
                        source="demo/ci",
                    ),
                    TestSuiteRunFinished.build(
                        artifact=payments, suite="integration", outcome="success", source="demo/ci"
                    ),
                    SecurityScanFinished.build(
                        artifact=payments, scanner="trivy", findings=Findings(), source="demo/ci"
                    ),
                    TestSuiteRunFinished.build(
                        artifact=ref,
                        suite="integration",
                        outcome="success",
                        passed=212,
                        failed=0,
                        source="demo/ci",
                    ),
                    ArtifactPackaged.build(
                        service="checkout",
                        version=version,
                        digest=digest,
                        commit=hashlib.sha1(version.encode()).hexdigest(),
                        repo="https://git.example.com/shop/checkout",
                        source="demo/ci",
                    ),
                    SecurityScanFinished.build(
                        artifact=ref,
                        scanner="trivy",
                        findings=Findings(medium=2, low=7),
                        source="demo/ci",
                    ),
                    BenchmarkFinished.build(
                        artifact=ref,
                        benchmark="checkout-load",
                        metrics={
                            "p99_latency": Measurement(value=41.5, unit="ms"),
                            "throughput": Measurement(
                                value=1250, unit="req/s", higher_is_better=True
                            ),
                        },
                        source="demo/ci",
                    ),
                    ArtifactPackaged.build(
                        service="checkout",
                        version=version,
                        digest=other,
                        commit="f" * 40,
                        source="demo/ci",
                    ),
                ]
                for event in steps:
                    await ci_pub.publish(event, traceparent=trace.get("traceparent"))
                    out.print(f"[dim]CI  ->[/dim] {escape(event.describe())}", highlight=False)
        deadline = time.monotonic() + 60
        while any(seen.get(k, 0) < n for k, n in expected.items()) and time.monotonic() < deadline:
            for records in (await watcher.getmany(timeout_ms=500)).values():
                for r in records:
                    record = record_from_kafka(r)
                    kind = _kind(r)
                    if kind in ("artifact.packaged",) or kind.endswith(".finished"):
                        continue  # what CI sent, printed above
                    if not _about(
                        record, {label, payments.label}, policy.id, settings.max_event_bytes
                    ):
                        continue  # about another build (earlier runs, other teams)
                    if kind in expected:
                        seen[kind] = seen.get(kind, 0) + 1
                    line = describe_record(record, settings.max_event_bytes)
                    out.print(f"[bold]mesh[/bold] {escape(line)}", highlight=False)
    finally:
        await watcher.stop()
        provider.shutdown()
    ok = all(seen.get(k, 0) >= n for k, n in expected.items())
    if not ok:
        out.print(f"[red]the mesh did not answer in time: saw {seen}, expected {expected}[/red]")
    return label, ok


async def _watch(settings: Settings) -> AIOKafkaConsumer:
    """A consumer positioned at the current end of the watched topics (so nothing is missed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    partitions = await partitions_of(settings, [settings.topic(t) for t in WATCHED])
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    return consumer


def _policy_event() -> PolicyUpdated:
    return policy_updated(
        load_release_model(RELEASE_MODEL),
        updated_by="platform-team",
        source="infra/release-model.yaml",
        sender="demo/platform-team",
    )


def _about(record: KafkaRecord, labels: set[str], policy_id: str, max_bytes: int) -> bool:
    """Whether a record is about this demo's build or release model (dead letters: always)."""
    if record.topic.endswith("." + topics.DLQ):
        return True
    try:
        event = decode(record, max_bytes=max_bytes).event
    except InvalidEvent:
        return True
    return event.artifact_label() in labels or event.id == policy_id


def _kind(r: Any) -> str:
    headers = dict(r.headers or ())
    return short_type(headers.get("ce_type", b"").decode())
