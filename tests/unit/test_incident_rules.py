"""Rollback criteria on the signals' own times, the webhook formats tools send, the release
model's rollback section, and the postmortem draft."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policy import ModelError, load_text
from policy.model import RollbackCriterion
from services.incidents import criteria
from services.incidents.postmortem import Release, markdown
from services.incidents.store import Incident, TimelineRow
from services.incidents.webhooks import PayloadRefused, from_alertmanager, from_pagerduty

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def criterion(**kw: Any) -> RollbackCriterion:
    fields: dict[str, Any] = {"name": "errors", "metric": "error_rate", "threshold": 0.02}
    fields.update(kw)
    return RollbackCriterion(**fields)


def run(c: RollbackCriterion, checks: list[tuple[float, datetime]]) -> list[bool]:
    streak = None
    confirmed = []
    for value, at in checks:
        breaching = criteria.breaches(c, value, None)
        assert breaching is not None
        streak, done = criteria.step(c, streak, breaching, at)
        confirmed.append(done)
    return confirmed


def test_a_breach_must_hold_for_its_duration() -> None:
    c = criterion(hold="5m")
    assert run(c, [(0.03, T0), (0.04, T0 + 2 * MIN), (0.05, T0 + 5 * MIN)]) == [
        False, False, True,
    ]  # fmt: skip


def test_failed_checks_up_to_the_tolerance_are_let_pass() -> None:
    c = criterion(tolerate=2)
    checks = [(0.03, T0), (0.04, T0 + MIN), (0.05, T0 + 2 * MIN)]
    assert run(c, checks) == [False, False, True]


def test_a_passing_check_ends_the_breach() -> None:
    c = criterion(hold="5m", tolerate=1)
    broken = [(0.03, T0), (0.01, T0 + MIN), (0.03, T0 + 5 * MIN), (0.03, T0 + 9 * MIN)]
    assert run(c, broken) == [False, False, False, False]  # the breach began again at +5 min
    assert run(c, [*broken, (0.04, T0 + 10 * MIN)])[-1] is True


def test_signals_arriving_out_of_order_keep_the_breach_start() -> None:
    c = criterion(hold="5m")
    assert run(c, [(0.03, T0 + 5 * MIN), (0.03, T0 + 4 * MIN)]) == [False, False]


def test_relative_criteria_compare_with_the_previous_version() -> None:
    c = criterion(threshold=None, metric="p99_latency", relative_to_previous=1.5)
    assert criteria.breaches(c, 160.0, 100.0) is True
    assert criteria.breaches(c, 140.0, 100.0) is False
    assert criteria.breaches(c, 999.0, None) is None  # nothing to compare with
    assert "1.5 times the previous version's 100" in criteria.describe(c, 160.0, 100.0)


def test_a_breach_rolls_back_only_within_its_window_after_a_deploy() -> None:
    c = criterion(within="30m")
    assert criteria.within_deploy(c, T0, T0 + 29 * MIN)
    assert not criteria.within_deploy(c, T0, T0 + 31 * MIN)
    assert not criteria.within_deploy(c, T0, T0 - MIN)
    assert not criteria.within_deploy(c, None, T0)
    assert criteria.within_deploy(criterion(within=None), T0, T0 + timedelta(days=9))


@pytest.mark.parametrize(
    ("yaml_text", "says"),
    [
        ("rollback: [{name: x, metric: m}]", "either threshold"),
        ("rollback: [{name: x, metric: m, threshold: 1, runbook: nope}]", "no runbook 'nope'"),
        ("rollback: [{name: x, metric: m, threshold: 1, environments: [qa]}]", "unknown env"),
        ("rollback: [{name: x, metric: m, threshold: 1, hold: soon}]", "not a duration"),
        ("runbooks: {r: {steps: [{name: a, action: wait}]}}", "not a duration"),
        ("runbooks: {r: {steps: [{name: a, action: disable-flag}]}}", "params.flag"),
        ("escalation: {levels: [{after: 10m, notify: [owner]}, {after: 5m, notify: [x]}]}",
         "after the one before"),
        ("escalation: {webhooks: [{url: 'https://x', format: pagerduty}]}", "routing_key"),
    ],
)  # fmt: skip
def test_the_rollback_section_of_the_release_model_is_checked(yaml_text: str, says: str) -> None:
    with pytest.raises(ModelError, match=says):
        load_text(f"version: 1\nenvironments: [{{name: dev}}]\n{yaml_text}\n".encode())


ALERT: dict[str, Any] = {
    "version": "4",
    "status": "firing",
    "groupKey": '{}:{alertname="HighErrorRate"}',
    "commonLabels": {"env": "prod-eu"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "checkout", "severity": "page"},
            "annotations": {"summary": "5xx above 2 %", "value": "0.041"},
            "startsAt": "2026-11-27T11:58:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "c0ffee",
        }
    ],
}


def test_an_alertmanager_alert_becomes_a_signal() -> None:
    [signal] = from_alertmanager(ALERT, T0)
    c = signal.subject.content
    assert (c.service, c.environment, c.metric, c.value) == ("checkout", "prod-eu", "HighErrorRate",
                                                             0.041)  # fmt: skip
    assert (c.kind, c.status, c.dedup_key, c.severity) == ("alert", "firing", "c0ffee", "critical")
    assert c.observed_at == datetime(2026, 11, 27, 11, 58, tzinfo=UTC)


def test_a_resolved_alert_is_timed_at_its_end() -> None:
    alert = dict(ALERT["alerts"][0], status="resolved", endsAt="2026-11-27T12:10:00Z")
    [signal] = from_alertmanager({**ALERT, "alerts": [alert]}, T0)
    assert signal.subject.content.status == "resolved"
    assert signal.subject.content.observed_at == datetime(2026, 11, 27, 12, 10, tzinfo=UTC)


def test_a_bad_alertmanager_payload_names_every_problem() -> None:
    broken = {"alerts": [{"labels": {"alertname": "X"}}, {"labels": {"alertname": "Y",
              "service": "Not A Name", "env": "dev"}}, "nonsense"]}  # fmt: skip
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager(broken, T0)
    problems = caught.value.problems
    assert any(p.startswith("alerts[0].labels: no service") for p in problems)
    assert any("alerts[1].labels: service 'Not A Name' is not a name" in p for p in problems)
    assert any(p.startswith("alerts[2]: an alert needs `labels`") for p in problems)
    with pytest.raises(PayloadRefused, match="no `alerts` list"):
        from_alertmanager({"status": "firing"}, T0)


PD: dict[str, Any] = {
    "routing_key": "R0UT1NG",
    "event_action": "trigger",
    "dedup_key": "checkout-5xx",
    "payload": {
        "summary": "checkout 5xx above 2 %",
        "source": "grafana",
        "severity": "error",
        "component": "checkout",
        "group": "prod-eu",
        "class": "error_rate",
        "custom_details": {"value": 0.05},
    },
}


def test_pagerduty_events_become_signals() -> None:
    s = from_pagerduty(PD, T0).subject.content
    assert (s.service, s.environment, s.metric, s.value, s.status, s.dedup_key) == (
        "checkout", "prod-eu", "error_rate", 0.05, "firing", "checkout-5xx",
    )  # fmt: skip
    pd_ack = {"event_action": "acknowledge", "dedup_key": "checkout-5xx",
              "payload": {"component": "checkout", "group": "prod-eu"}}  # fmt: skip
    ack = from_pagerduty(pd_ack, T0)
    assert ack.subject.content.status == "acknowledged"
    generated = from_pagerduty({**PD, "dedup_key": None}, T0).subject.content.dedup_key
    assert (
        generated
        and generated == from_pagerduty({**PD, "dedup_key": None}, T0).subject.content.dedup_key
    )


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({**PD, "event_action": "explode"}, "event_action"),
        ({"event_action": "resolve", "payload": PD["payload"]}, "dedup_key: needed to resolve"),
        ({**PD, "payload": {**PD["payload"], "severity": "meh"}}, "payload.severity"),
        ({**PD, "payload": {**PD["payload"], "summary": ""}}, "payload.summary"),
        ({**PD, "payload": {**PD["payload"], "group": None}}, "environment"),
        ([], "JSON object"),
    ],
)
def test_a_bad_pagerduty_event_is_refused_with_the_field(event: Any, says: str) -> None:
    with pytest.raises(PayloadRefused, match=says):
        from_pagerduty(event, T0)


def test_the_postmortem_tells_the_story_with_time_to_detect_and_restore() -> None:
    incident = Incident(
        id="inc-1", dedup_key="checkout/prod-eu", service="checkout", environment="prod-eu",
        state="resolved", title="error_rate 0.05 > 0.02 for 5m (errors)", criterion="errors",
        version="1.4.2", digest="sha256:" + "a" * 64, purl=None, promotion_id="prm-1",
        traceparent=None, drill=False, signals=12, first_signal_at=T0,
        detected_at=T0 + 5 * MIN + timedelta(seconds=2), acknowledged_at=None,
        acknowledged_by=None, rollback_at=T0 + 5 * MIN + timedelta(seconds=2),
        rolled_back_at=T0 + 6 * MIN, rolled_back_to="1.4.1", resolved_at=T0 + 20 * MIN,
        resolved_by="ann", escalation_level=0,
    )  # fmt: skip
    timeline = [
        TimelineRow(T0 - 10 * MIN, "deployment", "checkout@1.4.2 deployed to prod-eu"),
        TimelineRow(T0, "first signal", incident.title),
        TimelineRow(T0 + 6 * MIN, "rolled back", "checkout@1.4.1 runs in prod-eu again"),
    ]
    spans = [{"name": "gate prod-eu: pass", "service": "lockstep-gates",
              "start_ns": int((T0 - 30 * MIN).timestamp() * 1e9), "attributes": {}}]  # fmt: skip
    text = markdown(incident, timeline, Release(commit="abc123", repo="https://git/x", spans=spans))
    assert "**Time to detect:** 5 min 2 s" in text
    assert "**Time to restore:** 6 min 0 s (first bad signal → rollback done)" in text
    assert "`abc123`" in text and "**Rolled back to:** 1.4.1" in text
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert [r.split("|")[2].strip()[:14] for r in rows] == [
        "trace: lockste", "**deployment**", "**first signal", "**rolled back*",
    ]  # fmt: skip


async def test_the_webhook_edge_asks_for_its_token_when_one_is_set() -> None:
    from typing import cast

    import asyncpg
    import httpx

    from services.incidents.edge import create_app
    from shared.settings import Settings

    app = create_app(cast(asyncpg.Pool, None), Settings(incidents_webhook_token="s3cret"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
        assert (await http.post("/webhooks/alertmanager", json={})).status_code == 401
        assert (await http.post("/webhooks/pagerduty?token=wrong", json={})).status_code == 401
        # past the token, the payload itself is judged (and refused here, before any write)
        by_query = await http.post("/webhooks/alertmanager?token=s3cret", json={"alerts": 1})
        assert by_query.status_code == 400
        bearer = {"Authorization": "Bearer s3cret"}
        by_header = await http.post("/v2/enqueue", json={"event_action": "x"}, headers=bearer)
        assert (by_header.status_code, by_header.json()["status"]) == (400, "invalid event")


def test_a_late_pass_from_before_the_last_failure_does_not_end_the_breach() -> None:
    c = criterion(hold="5m")
    late = [(0.03, T0), (0.04, T0 + 3 * MIN), (0.01, T0 + MIN), (0.05, T0 + 5 * MIN)]
    assert run(c, late) == [False, False, False, True]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ('{message: "Check {dashboard"}', "not a template"),
        ('{message: "{metric} is high"}', "names {metric}"),
        ('{prompt: "{0}"}', "names {0}"),
    ],
)
def test_runbook_templates_are_checked_when_the_model_loads(params: str, says: str) -> None:
    text = (
        "version: 1\nenvironments: [{name: dev}]\n"
        f"runbooks: {{r: {{steps: [{{name: a, action: notify, params: {params}}}]}}}}\n"
    )
    with pytest.raises(ModelError, match=says):
        load_text(text.encode())


def test_a_runbook_message_with_braces_written_twice_renders_them() -> None:
    from services.incidents.runbooks import render

    model = load_text(
        b"version: 1\nenvironments: [{name: dev}]\nrunbooks: {r: {steps: [{name: a, "
        b'action: notify, params: {message: "{service}: {{not a field}}"}}]}}\n'
    )
    template = model.model.runbooks["r"].steps[0].params["message"]
    incident = _incident()
    assert render(template, incident) == "checkout: {not a field}"


def test_a_webhook_url_httpx_could_not_use_is_refused() -> None:
    with pytest.raises(ModelError, match=r"escalation\.webhooks\.0\.url"):
        load_text(b"version: 1\nenvironments: [{name: dev}]\n"
                  b"escalation: {webhooks: [{url: 'http://[::1'}]}\n")  # fmt: skip


def test_every_unreadable_alert_is_named() -> None:
    alerts = [
        {"labels": {"alertname": "A", "service": "api", "env": "dev"}, "status": "firing",
         "annotations": {"summary": "x" * 2000}},
        {"labels": {"alertname": "B", "service": "api", "env": "dev"}, "status": "firing",
         "annotations": {"summary": "y" * 2000}},
    ]  # fmt: skip
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager({"alerts": alerts}, T0)
    assert [p.split(":")[0] for p in caught.value.problems] == ["alerts[0]", "alerts[1]"]


def _incident() -> Incident:
    return Incident(
        id="inc-1", dedup_key="k", service="checkout", environment="prod-eu", state="open",
        title="t", criterion="errors", version="1.4.2", digest=None, purl=None,
        promotion_id=None, traceparent=None, drill=False, signals=1, first_signal_at=T0,
        detected_at=T0, acknowledged_at=None, acknowledged_by=None, rollback_at=None,
        rolled_back_at=None, rolled_back_to=None, resolved_at=None, resolved_by=None,
        escalation_level=0,
    )  # fmt: skip


async def test_an_edge_whose_port_is_taken_says_so_and_does_not_exit() -> None:
    import socket

    from shared.http_edge import HttpServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        edge = HttpServer(lambda *_: None, host="127.0.0.1", port=port, name="test edge")
        with pytest.raises(OSError, match=r"could not listen on 127\.0\.0\.1"):
            await edge.start()
