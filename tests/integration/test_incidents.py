"""The incidents service on the real Kafka and Postgres (in-process, its clock in the test's
hands): alerts from Alertmanager and PagerDuty through its webhook edge, de-duplication,
breaches outside the deployment window, relative criteria, escalation, and an incident's work
in the trace of the release it is about."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from events import (
    ArtifactRef,
    CDEvent,
    IncidentDetected,
    IncidentResolved,
    Reference,
    RollbackRequested,
    ServiceDeployed,
    SignalObserved,
)
from events.deployments import DeployedContent, DeployedSubject, DeploymentFacts
from events.incidents import IncidentAcknowledged, IncidentNotified
from policy import load_text, policy_updated
from policy.model import Webhook
from services.incidents import actions, store
from services.incidents.app import SPEC
from shared.clock import ManualClock
from shared.http_edge import HttpServer
from shared.service import RunningService
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = pytest.mark.integration
MIN = timedelta(minutes=1)

MODEL = """\
version: 1
environments:
  - name: staging
owners:
  api: {team: api-team, escalation: [api-lead, cto]}
  traced: {team: traced-team, escalation: [traced-lead]}
rollback:
  - name: errors
    metric: error_rate
    threshold: 0.05
    within: 30m
  - name: slow
    metric: p99_latency
    relative_to_previous: 1.5
    hold: 2m
escalation:
  levels:
    - {after: 0s, notify: [owner]}
    - {after: 10m, notify: [escalation]}
  webhooks:
    - {url: "http://127.0.0.1:9/unreachable", format: pagerduty, routing_key: R0UT1NG}
"""


@dataclass
class Incidents:
    ns: Namespace
    running: RunningService
    clock: ManualClock
    url: str

    def events(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.ns.log.events(kind) if isinstance(e, kind)]

    async def wait(self, kind: type[Any], matches: Callable[[Any], bool]) -> list[Any]:
        """The events of ``kind`` that match, once there is one."""
        found: list[Any] = await self.ns.log.wait_for(
            lambda: [e for e in self.events(kind) if matches(e)]
        )
        return found

    def trace_of(self, event: CDEvent) -> str | None:
        """The trace id the record of ``event`` carries."""
        for record in self.ns.log.records:
            if record.header("ce_id") == event.id:
                return actions.trace_id_of(record.header("traceparent"))
        return None

    async def deploy(
        self, service: str, version: str, at: datetime, traceparent: str | None = None
    ) -> None:
        ref = ArtifactRef(service, version, digest(f"{service} {version}"))
        event = ServiceDeployed(
            context=ServiceDeployed.new_context("lockstep/deployer/test"),
            subject=DeployedSubject(
                id=service,
                content=DeployedContent(
                    environment=Reference(id="staging"), artifact_id=ref.purl()
                ),
            ),
            custom_data=DeploymentFacts(promotion_id=f"prm-{service}-{version}", agent="test"),
        )
        event = event.model_copy(
            update={"context": event.context.model_copy(update={"timestamp": at})}
        )
        await self.ns.publish(event, traceparent=traceparent)
        await self.ns.log.wait_for(lambda: [
            e for e in self.events(ServiceDeployed) if e.id == event.id])  # fmt: skip
        await asyncio.sleep(0.5)  # the service has taken it in (same partition as the signals)


WEBHOOK_TOKEN = "it-webhook-token"
WEBHOOK_AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


@pytest.fixture(scope="module")
async def incidents(new_namespace: NamespaceFactory) -> AsyncIterator[Incidents]:
    ns = await new_namespace(
        incidents_http_port=0, periodic_s=3600.0, incidents_webhook_token=WEBHOOK_TOKEN
    )
    clock = ManualClock(datetime.now(UTC))
    running = RunningService(SPEC, ns.settings, clock=clock)
    await running.setup()
    running.start()
    try:
        assert running.consumer is not None
        await asyncio.wait_for(running.consumer.assigned.wait(), 30)
        edge = running.companions[0]
        assert isinstance(edge, HttpServer)
        await asyncio.wait_for(edge.started.wait(), 10)
        await ns.publish(
            policy_updated(load_text(MODEL.encode()), updated_by="platform"), signed_as="platform"
        )
        yield Incidents(ns, running, clock, f"http://127.0.0.1:{edge.port}")
    finally:
        await running.stop()


def alert(status: str, fingerprint: str, service: str = "api") -> dict[str, Any]:
    return {
        "version": "4", "status": status, "commonLabels": {"environment": "staging"},
        "alerts": [{
            "status": status,
            "labels": {"alertname": "DiskFull", "service": service, "severity": "warning"},
            "annotations": {"summary": "disk 97 %"},
            "startsAt": "2026-11-27T11:00:00Z", "endsAt": "2026-11-27T11:30:00Z",
            "fingerprint": fingerprint,
        }],
    }  # fmt: skip


async def test_alertmanager_alerts_open_one_incident_and_resolve_it(incidents: Incidents) -> None:
    async with httpx.AsyncClient(base_url=incidents.url, headers=WEBHOOK_AUTH) as http:
        for _ in range(5):  # Alertmanager repeats a firing alert
            r = await http.post("/webhooks/alertmanager", json=alert("firing", "f-disk"))
            assert (r.status_code, r.json()) == (200, {"accepted": 1})
        opened = await incidents.ns.log.wait_for(lambda: [
            e for e in incidents.events(IncidentDetected)
            if e.custom_data and e.custom_data.dedup_key == "f-disk"])  # fmt: skip
        await asyncio.sleep(1.0)
        rows = await incidents.ns.sql(
            "incidents", "SELECT signals FROM incidents WHERE dedup_key = 'f-disk'"
        )
        assert len(opened) == 1 and [r["signals"] for r in rows] == [5]
        r = await http.post("/webhooks/alertmanager", json=alert("resolved", "f-disk"))
        assert r.status_code == 200
    resolved = await incidents.wait(
        IncidentResolved, lambda e: e.subject.id == opened[0].subject.id
    )
    assert resolved[0].custom_data is not None and resolved[0].custom_data.by == "alertmanager"
    assert not incidents.events(RollbackRequested)  # an alert opens an incident, no rollback


async def test_pagerduty_trigger_acknowledge_resolve(incidents: Incidents) -> None:
    event = {
        "routing_key": "x", "event_action": "trigger", "dedup_key": "pd-1",
        "payload": {"summary": "api 5xx", "source": "grafana", "severity": "critical",
                    "component": "api", "group": "staging"},
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=incidents.url, headers=WEBHOOK_AUTH) as http:
        r = await http.post("/v2/enqueue", json=event)
        assert (r.status_code, r.json()["dedup_key"]) == (202, "pd-1")
        await incidents.ns.log.wait_for(lambda: [
            e for e in incidents.events(IncidentDetected)
            if e.custom_data and e.custom_data.dedup_key == "pd-1"])  # fmt: skip
        for action in ("acknowledge", "resolve"):
            r = await http.post("/webhooks/pagerduty", json={**event, "event_action": action})
            assert r.status_code == 202
    await incidents.ns.log.wait_for(lambda: incidents.events(IncidentAcknowledged))
    await incidents.ns.log.wait_for(lambda: [
        e for e in incidents.events(IncidentResolved) if e.custom_data
        and e.custom_data.dedup_key == "pd-1"])  # fmt: skip


async def test_webhook_alerts_at_absurd_times_get_400_naming_the_field_and_open_nothing(
    incidents: Incidents,
) -> None:
    def at(starts: Any, fingerprint: str) -> dict[str, Any]:
        payload = alert("firing", fingerprint, service="clocks")
        payload["alerts"][0]["startsAt"] = starts
        return payload

    page = {
        "routing_key": "x", "event_action": "trigger", "dedup_key": "pd-year-9999",
        "payload": {"summary": "clocks 5xx", "source": "grafana", "severity": "critical",
                    "component": "clocks", "group": "staging",
                    "timestamp": "9999-12-31T23:59:59Z"},
    }  # fmt: skip
    async with httpx.AsyncClient(base_url=incidents.url, headers=WEBHOOK_AUTH) as http:
        for starts, words in ((9999, "is a number"), ("9999-12-31T23:59:59Z", "a day in the"),
                              ("1970-01-01T00:00:00Z", "before 2000")):  # fmt: skip
            r = await http.post("/webhooks/alertmanager", json=at(starts, "f-absurd"))
            assert r.status_code == 400, r.text
            [problem] = r.json()["problems"]
            assert problem.startswith("alerts[0].startsAt: ") and words in problem
        r = await http.post("/v2/enqueue", json=page)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0].startswith("payload.timestamp: ")
        # the same service's next, sane alert goes through: what came before it is known
        r = await http.post("/webhooks/alertmanager", json=alert("firing", "f-sane", "clocks"))
        assert (r.status_code, r.json()) == (200, {"accepted": 1})
    await incidents.ns.log.wait_for(lambda: [
        e for e in incidents.events(IncidentDetected)
        if e.custom_data and e.custom_data.dedup_key == "f-sane"])  # fmt: skip
    assert not [
        s for s in incidents.events(SignalObserved)
        if s.subject.content.dedup_key in ("f-absurd", "pd-year-9999")
    ]  # fmt: skip
    for table in ("signals", "incidents"):  # nothing of the refused ones was kept or opened
        rows = await incidents.ns.sql(
            "incidents", f"SELECT dedup_key FROM {table} WHERE service = 'clocks'"
        )
        assert [r["dedup_key"] for r in rows] == ["f-sane"], table


async def test_a_breach_long_after_the_deploy_opens_an_incident_but_rolls_nothing_back(
    incidents: Incidents,
) -> None:
    now = incidents.clock()
    await incidents.deploy("old-api", "1.0.0", now - timedelta(hours=3))
    breach = SignalObserved.build(service="old-api", environment="staging", metric="error_rate",
                                  value=0.2, source="prometheus", observed_at=now)  # fmt: skip
    await incidents.ns.publish(breach)
    opened = await incidents.wait(IncidentDetected, lambda e: e.service_name() == "old-api")
    await asyncio.sleep(1.0)
    assert not [e for e in incidents.events(RollbackRequested)
                if e.subject.content.service == "old-api"]  # fmt: skip
    rows = await incidents.ns.sql(
        "incidents", "SELECT kind, detail FROM timeline WHERE incident_id = $1",
        opened[0].subject.id,
    )  # fmt: skip
    assert ("no rollback", "outside the 30m after a deployment") in [
        (r["kind"], r["detail"]) for r in rows
    ]

    # That incident is still open when a new version goes out and breaches: the new release
    # is an incident of its own, and it is rolled back.
    await incidents.deploy("old-api", "2.0.0", now - 5 * MIN)
    fresh = SignalObserved.build(service="old-api", environment="staging", metric="error_rate",
                                 value=0.3, source="prometheus", observed_at=now)  # fmt: skip
    await incidents.ns.publish(fresh)
    rollback = await incidents.wait(
        RollbackRequested, lambda e: e.subject.content.service == "old-api"
    )
    assert rollback[0].subject.content.bad_version == "2.0.0"
    assert rollback[0].subject.content.incident_id != opened[0].subject.id


async def test_a_relative_criterion_compares_with_the_previous_versions_level(
    incidents: Incidents,
) -> None:
    now = incidents.clock()
    await incidents.deploy("api", "1.0.0", now - timedelta(hours=2))
    for i in range(5):
        await incidents.ns.publish(SignalObserved.build(
            service="api", environment="staging", metric="p99_latency", value=100.0,
            source="prometheus", observed_at=now - timedelta(hours=1, minutes=i)))  # fmt: skip
    await incidents.deploy("api", "2.0.0", now - 10 * MIN)
    for value, at in ((140.0, now - 9 * MIN), (160.0, now - 8 * MIN), (170.0, now - 5 * MIN)):
        await incidents.ns.publish(SignalObserved.build(
            service="api", environment="staging", metric="p99_latency", value=value,
            source="prometheus", observed_at=at))  # fmt: skip
    rollback = await incidents.wait(RollbackRequested, lambda e: e.subject.content.service == "api")
    c = rollback[0].subject.content
    assert (c.bad_version, c.environment) == ("2.0.0", "staging")
    assert "1.5 times the previous version's 100" in c.reason

    # Escalation: the owner is told at once; nobody acknowledges; 10 minutes on, the next level.
    incident_id = c.incident_id

    def told() -> list[tuple[int, str]]:
        return sorted(
            (e.subject.content.level, e.subject.content.recipient)
            for e in incidents.events(IncidentNotified)
            if e.subject.content.incident_id == incident_id
        )

    await incidents.ns.log.wait_for(lambda: told() == [(0, "api-team")])
    assert incidents.running.periodic is not None
    await incidents.running.periodic.turn()
    assert told() == [(0, "api-team")]
    incidents.clock.advance(11 * MIN)
    await incidents.running.periodic.turn()
    await incidents.ns.log.wait_for(
        lambda: told() == [(0, "api-team"), (1, "api-lead"), (1, "cto")]
    )
    payloads = await incidents.ns.sql(
        "incidents", "SELECT payload::text FROM notifications WHERE incident_id = $1",
        incident_id,
    )  # fmt: skip
    pagerduty = [json.loads(r[0]) for r in payloads]
    assert {p["event_action"] for p in pagerduty} == {"trigger"}
    assert pagerduty[0]["routing_key"] == "R0UT1NG" and pagerduty[0]["dedup_key"] == incident_id
    assert pagerduty[0]["payload"]["component"] == "api"


async def test_an_incidents_work_is_in_the_trace_of_the_release_it_is_about(
    incidents: Incidents,
) -> None:
    trace_id = secrets.token_hex(16)
    now = incidents.clock()
    await incidents.deploy(
        "traced", "1.0.0", now - MIN, traceparent=f"00-{trace_id}-{secrets.token_hex(8)}-01"
    )
    await incidents.ns.publish(SignalObserved.build(  # a trace of its own
        service="traced", environment="staging", metric="error_rate", value=0.2,
        source="prometheus", observed_at=now))  # fmt: skip
    [opened] = await incidents.wait(IncidentDetected, lambda e: e.service_name() == "traced")
    incident_id = opened.subject.id
    [rollback] = await incidents.wait(
        RollbackRequested, lambda e: e.subject.content.incident_id == incident_id
    )
    assert opened.custom_data is not None and opened.custom_data.trace_id == trace_id
    assert incidents.trace_of(opened) == incidents.trace_of(rollback) == trace_id

    # Later work, set off by a clock (no span of its own) and by a person's acknowledgement
    # (a trace of its own), continues the incident's trace.
    incidents.clock.advance(11 * MIN)
    assert incidents.running.periodic is not None
    await incidents.running.periodic.turn()
    [escalated] = await incidents.wait(IncidentNotified, lambda e: (
        e.subject.content.incident_id, e.subject.content.level) == (incident_id, 1))  # fmt: skip
    await incidents.ns.publish(SignalObserved.build(
        service="traced", environment="staging", metric="error_rate", value=None,
        source="pagerduty", kind="alert", status="acknowledged",
        dedup_key=opened.custom_data.dedup_key))  # fmt: skip
    [acknowledged] = await incidents.wait(
        IncidentAcknowledged, lambda e: e.subject.content.incident_id == incident_id
    )
    assert incidents.trace_of(escalated) == incidents.trace_of(acknowledged) == trace_id

    # The trace is the runtime's thread, not the service's own columns; what the read models
    # and the webhooks say of it comes from there.
    async with incidents.ns.connect("incidents") as conn:
        found = await store.get(conn, incident_id)
        kept = await conn.fetch(
            "SELECT key FROM trace_threads WHERE key = ANY($1::text[])",
            [store.incident_thread(incident_id), store.deployment_thread("traced", "1.0.0",
                                                                          "staging")],
        )  # fmt: skip
        own = await conn.fetch(
            "SELECT traceparent FROM incidents WHERE id = $1 UNION ALL "
            "SELECT traceparent FROM deployments WHERE service = 'traced'",
            incident_id,
        )
    assert len(kept) == 2 and [r["traceparent"] for r in own] == [None, None]
    assert found is not None and actions.trace_id_of(found.traceparent) == trace_id
    generic = Webhook.model_validate({"url": "http://127.0.0.1:9/x"})
    payload = actions.webhook_payload(generic, found, 1, "traced-lead", "m", "trigger")
    assert payload["traceId"] == trace_id
