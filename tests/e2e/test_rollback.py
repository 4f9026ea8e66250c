"""The whole loop with every part its own process: artifacts, gates, promotion, flags,
incidents and a deployer agent. A good version is deployed, then a bad one; its error rate
breaches the release model's criterion; the incident service opens one incident (however
many signals come), pulls the kill switch, runs its runbook, and asks for a rollback; the
promotion service approves the last good digest, the deployer rolls back, auto-promotion
holds, and the bad version is not promoted again. The incidents service is killed
mid-incident and loses nothing; people continue the runbook, write the postmortem, resolve
the incident, and drill the rollback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from events import (
    ArtifactPackaged,
    FlagChanged,
    IncidentDetected,
    IncidentResolved,
    KafkaRecord,
    PromotionApproved,
    PromotionBlocked,
    RollbackRequested,
    RunbookStepFinished,
    ServiceDeployed,
    ServiceRolledBack,
    SignalObserved,
)
from events.incidents import IncidentNotified
from policy import load_text, policy_updated
from shared.bus import Publisher
from shared.telemetry import current_trace_headers, read_spans, tracer, tracer_provider
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SERVICE = "shop-api"

MODEL = """\
version: 1
environments:
  - name: dev
owners:
  shop-api: {team: shop-team, escalation: [shop-lead]}
rollback:
  - name: error-rate
    metric: error_rate
    threshold: 0.02
    hold: 2m
    tolerate: 1
    within: 30m
    kill_switches: [shop-new-cart]
    runbook: errors
runbooks:
  errors:
    steps:
      - name: tell the team
        action: notify
        params: {message: "{service} errors in {environment}"}
      - {name: check the dashboard, action: pause, params: {prompt: "look at {service}"}}
      - {name: all clear, action: notify, params: {message: "runbook done for {incident}"}}
escalation:
  levels:
    - {after: 0s, notify: [owner]}
    - {after: 1h, notify: [escalation]}
  webhooks:
    - {url: "HOOK_URL", format: json}
"""

KILL_SWITCH = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "on",
    "metadata": {"type": "kill-switch", "owner": "shop-team"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver, as a chat or paging tool would be."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


WEBHOOK_TOKEN = "e2e-webhook-token"


class Mesh:
    def __init__(self, ns: Namespace, tmp_path: Path) -> None:
        self.ns = ns
        self.flags_port = free_port()
        self.incidents_port = free_port()
        self.env = {
            **os.environ,
            "LOCKSTEP_NAMESPACE": ns.settings.namespace,
            "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
            "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
            "LOCKSTEP_LOG_LEVEL": "WARNING",
            "LOCKSTEP_FLAGS_HTTP_PORT": str(self.flags_port),
            "LOCKSTEP_INCIDENTS_HTTP_PORT": str(self.incidents_port),
            "LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "LOCKSTEP_PERIODIC_S": "0.5",
            "LOCKSTEP_FLAGD_SCHEMA_DIR": str(REPO / ".lockstep" / "flagd-schemas"),
        }
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        with (self.tmp_path / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.tmp_path.glob("*.log"))
        )

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"lockstep {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def stop_all(self) -> list[int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(60) for proc in self.procs.values()]

    def events(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.ns.log.events(kind) if isinstance(e, kind)]


def build(version: str) -> ArtifactPackaged:
    return ArtifactPackaged.build(
        service=SERVICE, version=version, digest=digest(f"{SERVICE} {version}"),
        commit=f"{version.replace('.', '')}" + "c" * 36, repo="https://git.example.com/shop",
    )  # fmt: skip


def error_rate(value: float, at: datetime) -> SignalObserved:
    return SignalObserved.build(
        service=SERVICE, environment="dev", metric="error_rate", value=value,
        window_seconds=60, source="prometheus", observed_at=at,
    )  # fmt: skip


async def test_a_bad_release_is_rolled_back_and_held_and_the_story_is_kept(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    mesh = Mesh(ns, tmp_path)
    with hook_receiver() as (hook_url, hooks):
        model = load_text(MODEL.replace("HOOK_URL", hook_url).encode())
        for name in ("artifacts", "gates", "promotion", "flags", "incidents"):
            mesh.start(name, "run", name)
        mesh.start("deployer", "deployer", "--agent", "e2e", "--env", "dev",
                   "--state-dir", str(tmp_path / "deployer"))  # fmt: skip
        try:
            await _the_story(mesh, model, hooks)
        except BaseException:
            print(mesh.logs())  # what the services said, for whoever reads the failure
            raise
        finally:
            codes = mesh.stop_all()
    assert codes == [0] * len(codes), codes


async def _the_story(mesh: Mesh, model: Any, hooks: list[dict[str, Any]]) -> None:
    ns = mesh.ns
    await ns.publish(policy_updated(model, updated_by="platform"), signed_as="platform")
    async with Publisher(ns.settings) as ci:
        await asyncio.to_thread(
            mesh.cli, "flags", "set", "shop-new-cart", "--env", "dev",
            "--json", json.dumps(KILL_SWITCH), "--reason", "a kill switch", "--by", "alice",
        )  # fmt: skip

        def deployed(version: str) -> bool:
            return any(e.ref().version == version for e in mesh.events(ServiceDeployed))

        await ci.publish(build("1.0.0"))
        await ns.log.wait_for(lambda: deployed("1.0.0"), 90)

        # The bad release, built in a CI span: its trace is the one the rollback must join.
        provider = tracer_provider(ns.settings, "ci")
        with tracer(provider).start_as_current_span("ci build shop-api@2.0.0"):
            ci_trace = current_trace_headers()["traceparent"]
            await ci.publish(build("2.0.0"), traceparent=ci_trace)
        provider.shutdown()
        await ns.log.wait_for(lambda: deployed("2.0.0"), 90)
        deployed_at = next(
            e.context.timestamp for e in mesh.events(ServiceDeployed)
            if e.ref().version == "2.0.0"
        )  # fmt: skip

        # Errors after the deploy: a failed check (tolerated), then more for over 2 minutes.
        t0 = deployed_at + timedelta(seconds=30)
        for value, at in ((0.05, t0), (0.04, t0 + timedelta(minutes=1)),
                          (0.06, t0 + timedelta(minutes=2, seconds=1))):  # fmt: skip
            await ci.publish(error_rate(value, at))
        # ... and a storm of duplicates: still one incident
        for i in range(40):
            await ci.publish(error_rate(0.07, t0 + timedelta(minutes=2, seconds=2 + i)))

    incidents = await ns.log.wait_for(lambda: mesh.events(IncidentDetected), 60)
    incident = incidents[0]
    assert incident.subject.content.service is not None
    assert incident.custom_data is not None and incident.custom_data.version == "2.0.0"
    assert incident.custom_data.trace_id == ci_trace.split("-")[1]

    rolled = await ns.log.wait_for(lambda: mesh.events(ServiceRolledBack), 60)
    assert rolled[0].ref().version == "1.0.0"
    approved = [e for e in mesh.events(PromotionApproved) if e.subject.content.rollback]
    assert [(e.subject.content.version, e.subject.content.previous_version) for e in approved] == [
        ("1.0.0", "2.0.0")
    ]
    assert len(mesh.events(RollbackRequested)) == 1
    ledger = await ns.sql("promotion", "SELECT version FROM ledger WHERE service = $1", SERVICE)
    assert [r["version"] for r in ledger] == ["1.0.0"]

    # The kill switch flipped through the flags service.
    await ns.log.wait_for(
        lambda: [e for e in mesh.events(FlagChanged)
                 if e.subject.id == "dev/shop-new-cart" and e.subject.content.action == "disable"]
    )  # fmt: skip
    # The runbook ran its first step and paused for a person; the owner was told, by webhook too.
    await ns.log.wait_for(
        lambda: [e for e in mesh.events(RunbookStepFinished)
                 if e.subject.content.outcome == "paused"]
    )  # fmt: skip
    told = [e.subject.content.recipient for e in mesh.events(IncidentNotified)]
    assert "shop-team" in told
    for _ in range(50):
        if any(h.get("incident") == incident.subject.id for h in hooks):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("no webhook reached the receiver")

    # A new build waits: auto-promotion of shop-api to dev holds for the incident.
    async with Publisher(ns.settings) as ci:
        await ci.publish(build("3.0.0"))
    held = await ns.log.wait_for(
        lambda: [e for e in mesh.events(PromotionBlocked) if e.subject.content.version == "3.0.0"],
        60,
    )
    assert held[0].subject.content.holds[0].kind == "incident"

    # The incidents service dies mid-incident and comes back: nothing lost, nothing doubled.
    mesh.procs["incidents"].send_signal(signal.SIGKILL)
    mesh.procs["incidents"].wait(30)
    mesh.start("incidents", "run", "incidents")
    incident_id = incident.subject.id
    ns.signing_key("person", "ann")  # the on-call engineer, with a key of her own
    out = await asyncio.to_thread(mesh.cli, "incidents", "continue", incident_id, "--by", "ann")
    assert "continued by ann" in out
    await ns.log.wait_for(
        lambda: [e for e in mesh.events(RunbookStepFinished)
                 if e.subject.content.index == 2 and e.subject.content.outcome == "done"]
    )  # fmt: skip
    await asyncio.sleep(1.0)
    assert len(mesh.events(IncidentDetected)) == 1
    assert len(mesh.events(RollbackRequested)) == 1
    rows = await ns.sql("incidents", "SELECT signals, state FROM incidents")
    assert len(rows) == 1 and rows[0]["signals"] >= 2

    # The rollback's spans are in the bad release's trace.
    trace_id = ci_trace.split("-")[1]

    def rollback_span() -> list[dict[str, Any]]:
        return [
            s for s in read_spans(ns.settings.trace_dir)
            if s["trace_id"] == trace_id and s["name"].startswith("roll back to")
        ]  # fmt: skip

    for _ in range(100):  # spans leave the processes in batches
        if rollback_span():
            break
        await asyncio.sleep(0.2)
    assert rollback_span(), "the deployer's rollback span is not in the bad release's trace"

    # Malformed input: a refused webhook gets a 400; a broken signal goes to the DLQ.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{mesh.incidents_port}",
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    ) as http:
        bad = await http.post("/webhooks/alertmanager", json={"alerts": [{"labels": {}}]})
        assert bad.status_code == 400 and bad.json()["problems"]
        pd = await http.post("/webhooks/pagerduty", json={"event_action": "explode"})
        assert pd.status_code == 400 and pd.json()["status"] == "invalid event"
    await ns.send_raw([KafkaRecord(
        topic=ns.topic("signals"), key=b"x", value=b"{not json",
        headers=[("ce_type", SignalObserved.TYPE.encode()), ("ce_id", b"broken-1"),
                 ("ce_source", b"test"), ("ce_specversion", b"1.0")],
    )])  # fmt: skip
    await ns.log.wait_for(ns.log.dead_letters)

    # The postmortem, then the end of the incident: the hold lifts and 3.0.0 goes out.
    text = await asyncio.to_thread(mesh.cli, "incidents", "postmortem", incident_id)
    for expected in ("Time to detect", "Time to restore", "rolled back", "first signal",
                     "200" + "c" * 36, "shop-api@2.0.0"):  # fmt: skip
        assert expected in text, expected
    await asyncio.to_thread(mesh.cli, "incidents", "resolve", incident_id, "--by", "ann",
                            "--reason", "config fixed")  # fmt: skip
    await ns.log.wait_for(lambda: mesh.events(IncidentResolved))
    await ns.log.wait_for(lambda: any(
        e.ref().version == "3.0.0" for e in mesh.events(ServiceDeployed)), 60)  # fmt: skip
    again = [e for e in mesh.events(PromotionApproved)
             if e.subject.content.version == "2.0.0"
             and not e.subject.content.rollback]  # fmt: skip
    assert len(again) == 1, "2.0.0 was promoted again after its rollback"

    # A drill: 3.0.0 rolled back on purpose to the last good version (1.0.0, not 2.0.0).
    out = await asyncio.to_thread(mesh.cli, "drill", "rollback", "--service", SERVICE,
                                  "--env", "dev", "--timeout", "90", "--by", "ann")  # fmt: skip
    assert "shop-api@1.0.0 runs in dev again" in out
