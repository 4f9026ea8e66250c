"""The incidents webhooks hold the times tools send to the contract's rule for when an event
happened (``events.parse_event_time``): an absurd ``startsAt`` or ``payload.timestamp`` is
refused with a 400 that names the field, and nothing of the payload is published."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import httpx
import pytest

from services.incidents.edge import create_app
from services.incidents.webhooks import PayloadRefused, from_alertmanager, from_pagerduty
from shared.settings import Settings

NOW = datetime.now(UTC)
RECENT = (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")

ALERTS: dict[str, Any] = {
    "version": "4",
    "status": "firing",
    "commonLabels": {"environment": "staging"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "checkout"},
            "annotations": {"value": "0.04"},
            "startsAt": RECENT,
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "c0ffee",
        }
    ],
}
PAGE: dict[str, Any] = {
    "routing_key": "R0UT1NG",
    "event_action": "trigger",
    "dedup_key": "checkout-5xx",
    "payload": {
        "summary": "checkout 5xx",
        "source": "grafana",
        "severity": "error",
        "component": "checkout",
        "group": "staging",
        "timestamp": RECENT,
    },
}

ABSURD = [
    (9999, "is a number, not an RFC 3339 time"),
    (1_700_000_000, "is a number, not an RFC 3339 time"),
    ("9999", "is not an RFC 3339 time"),
    ("9999-12-31T23:59:59Z", "more than a day in the future"),
    ("2999-01-01T00:00:00+02:00", "more than a day in the future"),
    ("1970-01-01T00:00:00Z", "before 2000"),
    ("1999-12-31T23:59:59Z", "before 2000"),
    ("yesterday", "is not an RFC 3339 time"),
    ("2026-11-27", "is not an RFC 3339 time"),
    ("2026-11-27T11:58:00", "is not an RFC 3339 time with its offset"),
    ("20261127T115800Z", "is not an RFC 3339 time"),
    (True, "Input should be a valid datetime"),
    ({"at": "now"}, "Input should be a valid datetime"),
]


def alerts(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(ALERTS)
    payload["alerts"][0].update(changes)
    return payload


def page(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(PAGE)
    event["payload"].update(changes)
    return event


@pytest.mark.parametrize(("raw", "words"), ABSURD)
def test_an_alert_that_started_at_an_absurd_time_is_refused_naming_the_field(
    raw: Any, words: str
) -> None:
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager(alerts(startsAt=raw), NOW)
    [problem] = caught.value.problems
    assert problem.startswith("alerts[0].startsAt: ")
    assert words in problem


@pytest.mark.parametrize(("raw", "words"), ABSURD)
def test_a_resolved_alert_that_ended_at_an_absurd_time_is_refused(raw: Any, words: str) -> None:
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager(alerts(status="resolved", endsAt=raw), NOW)
    [problem] = caught.value.problems
    assert problem.startswith("alerts[0].endsAt: ") and words in problem


def test_a_resolved_alert_is_refused_for_an_absurd_start_too() -> None:
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager(alerts(status="resolved", endsAt=RECENT, startsAt="9999-01-01T00:00:00Z"),
                          NOW)  # fmt: skip
    assert [p.split(":")[0] for p in caught.value.problems] == ["alerts[0].startsAt"]


def test_a_firing_alerts_end_is_alertmanagers_guess_and_not_held_to_the_rule() -> None:
    ahead = (NOW + timedelta(days=3)).isoformat()  # resolve_timeout can put it far ahead
    [signal] = from_alertmanager(alerts(endsAt=ahead), NOW)
    assert signal.subject.content.observed_at == datetime.fromisoformat(RECENT)


def test_one_bad_alert_refuses_the_whole_payload() -> None:
    payload = alerts()
    payload["alerts"].append({**payload["alerts"][0], "startsAt": "9999-12-31T23:59:59Z",
                              "fingerprint": "bad"})  # fmt: skip
    with pytest.raises(PayloadRefused) as caught:
        from_alertmanager(payload, NOW)
    assert [p.split(":")[0] for p in caught.value.problems] == ["alerts[1].startsAt"]


@pytest.mark.parametrize(
    "raw",
    [
        RECENT,
        (NOW - timedelta(hours=1)).isoformat(),  # +00:00
        (NOW - timedelta(hours=1)).astimezone().isoformat(),  # the local offset
        (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+0000",  # PagerDuty's
        (NOW - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S") + "Z",
        (NOW + timedelta(hours=23)).isoformat(),  # clock skew
    ],
)
def test_good_times_are_taken_as_sent(raw: str) -> None:
    [signal] = from_alertmanager(alerts(startsAt=raw), NOW)
    assert signal.subject.content.observed_at.tzinfo is not None
    found = from_pagerduty(page(timestamp=raw), NOW)
    assert found.subject.content.observed_at == signal.subject.content.observed_at


@pytest.mark.parametrize("raw", [None, "", "0001-01-01T00:00:00Z"])
def test_an_alert_without_a_start_is_timed_when_it_arrives(raw: Any) -> None:
    [signal] = from_alertmanager(alerts(startsAt=raw), NOW)
    assert signal.subject.content.observed_at == NOW


@pytest.mark.parametrize(("raw", "words"), ABSURD)
def test_a_pagerduty_event_at_an_absurd_time_is_refused_naming_the_field(
    raw: Any, words: str
) -> None:
    with pytest.raises(PayloadRefused) as caught:
        from_pagerduty(page(timestamp=raw), NOW)
    [problem] = caught.value.problems
    assert problem.startswith("payload.timestamp: ") and words in problem


class NoPool:
    """A pool the edge must not touch: a refused payload publishes nothing."""

    def acquire(self) -> Any:
        raise AssertionError("a refused payload reached the outbox")


TOKEN = "t0ken"


def client() -> httpx.AsyncClient:
    app = create_app(cast(asyncpg.Pool, NoPool()), Settings(incidents_webhook_token=TOKEN))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://edge",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


async def test_the_alertmanager_edge_answers_an_absurd_start_with_400_and_opens_nothing() -> None:
    async with client() as http:
        r = await http.post("/webhooks/alertmanager", json=alerts(startsAt=9999))
    assert r.status_code == 400
    assert r.json()["error"] == "refused"
    [problem] = r.json()["problems"]
    assert problem.startswith("alerts[0].startsAt: 9999 is a number")


@pytest.mark.parametrize("path", ["/webhooks/pagerduty", "/v2/enqueue"])
async def test_the_pagerduty_edge_answers_a_year_9999_event_with_400(path: str) -> None:
    async with client() as http:
        r = await http.post(path, json=page(timestamp="9999-12-31T23:59:59Z"))
    assert r.status_code == 400
    assert r.json()["status"] == "invalid event"
    [problem] = r.json()["errors"]
    assert problem.startswith("payload.timestamp: ") and "more than a day" in problem
