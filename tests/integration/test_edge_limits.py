"""The HTTP edges as they run (the flags service's OFREP and admin API, the incidents service's
webhooks, each on its real uvicorn, Kafka and Postgres): a body over 1 MiB is refused with 413
whether it says its length or comes chunked without one (then cut at the limit; 50 MB are
sent here), JSON 200 000 deep gets 400 (it used to be a 500 from a RecursionError), and the
service answers the next good request as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from services.flags import keys
from services.flags.app import SPEC as FLAGS
from services.flags.edge import FlagEdge
from services.incidents.app import SPEC as INCIDENTS
from shared.http_edge import DEFAULT_MAX_BODY_BYTES, HttpServer
from shared.service import RunningService
from tests.integration.conftest import NamespaceFactory

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


@dataclass
class Edges:
    flags_url: str
    incidents_url: str
    evaluate_key: str
    admin_key: str


async def running(service: RunningService) -> None:
    await service.setup()
    service.start()
    assert service.consumer is not None
    await asyncio.wait_for(service.consumer.assigned.wait(), 30)


WEBHOOK_TOKEN = "limits-webhook-token"


@pytest.fixture(scope="module")
async def edges(new_namespace: NamespaceFactory) -> AsyncIterator[Edges]:
    ns = await new_namespace(
        flags_http_port=0, incidents_http_port=0, periodic_s=3600.0,
        incidents_webhook_token=WEBHOOK_TOKEN,
    )  # fmt: skip
    flags = RunningService(FLAGS, ns.settings)
    incidents = RunningService(INCIDENTS, ns.settings)
    try:
        await running(flags)
        await running(incidents)
        flag_edge, webhooks = flags.companions[0], incidents.companions[0]
        assert isinstance(flag_edge, FlagEdge) and isinstance(webhooks, HttpServer)
        await asyncio.wait_for(flag_edge.started.wait(), 10)
        await asyncio.wait_for(webhooks.started.wait(), 10)
        assert flags.pool is not None
        async with flags.pool.acquire() as conn:
            now = datetime.now(UTC)
            evaluate_key = await keys.create(conn, "prod-eu", "evaluate", "limits", now)
            admin_key = await keys.create(conn, "prod-eu", "admin", "limits-admin", now)
        yield Edges(
            f"http://127.0.0.1:{flag_edge.port}",
            f"http://127.0.0.1:{webhooks.port}",
            evaluate_key,
            admin_key,
        )
    finally:
        await incidents.stop()
        await flags.stop()


async def chunked(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes of JSON-ish padding, sent without a Content-Length."""
    yield b'{"context": {"pad": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}}'


def deep(depth: int = 200_000) -> bytes:
    return b'{"context": {"nested": ' + b"[" * depth + b"]" * depth + b"}}"


def assert_too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    answer = r.json()
    assert (answer["errorCode"], answer["limit"]) == ("BODY_TOO_LARGE", DEFAULT_MAX_BODY_BYTES)
    assert "send a smaller body" in answer["errorDetails"]


def assert_too_deep(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.json()["errorCode"] == "NESTING_TOO_DEEP"
    assert r.json()["limit"] == 64


ALERT = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": "checkout", "env": "prod-eu"},
            "annotations": {"summary": "errors", "value": "0.2"},
            "startsAt": "2026-11-27T12:00:00Z",
            "fingerprint": "limits-1",
        }
    ],
}


@pytest.mark.parametrize(
    "path",
    [
        "/ofrep/v1/evaluate/flags/new-checkout",
        "/environments/prod-eu/ofrep/v1/evaluate/flags",
    ],
)
async def test_ofrep_refuses_a_big_or_deep_body_and_evaluates_the_next(
    edges: Edges, path: str
) -> None:
    headers = {"X-API-Key": edges.evaluate_key}
    async with httpx.AsyncClient(base_url=edges.flags_url, headers=headers, timeout=60) as http:
        assert_too_large(await http.post(path, content=b" " * (2 * MiB)))  # with its length
        assert_too_large(await http.post(path, content=chunked(50 * MiB)))  # without
        assert_too_deep(await http.post(path, content=deep()))
        good = await http.post(path, json={"context": {"targetingKey": "ann"}})
    if path.endswith("/flags"):
        assert (good.status_code, good.json()["flags"]) == (200, [])  # no flags: none
    else:
        assert (good.status_code, good.json()["errorCode"]) == (404, "FLAG_NOT_FOUND")


async def test_the_admin_api_refuses_a_big_or_deep_body_and_takes_the_next(edges: Edges) -> None:
    headers = {"X-API-Key": edges.admin_key}
    path = "/admin/v1/environments/prod-eu/flags/limits-flag"
    definition = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "metadata": {"type": "release", "owner": "payments", "release": "checkout@1.0.0"},
    }
    async with httpx.AsyncClient(base_url=edges.flags_url, headers=headers, timeout=60) as http:
        assert_too_large(await http.put(path, content=b" " * (2 * MiB)))
        assert_too_large(await http.put(path, content=chunked(50 * MiB)))
        assert_too_deep(await http.put(path, content=deep()))
        good = await http.put(path, json={"definition": definition, "reason": "limits test"})
        exported = await http.get("/admin/v1/environments/prod-eu/flags")
    assert (good.status_code, good.json()["changed"]) == (200, True), good.text
    assert exported.json()["flags"]["limits-flag"]["defaultVariant"] == "off"


@pytest.mark.parametrize("path", ["/webhooks/alertmanager", "/webhooks/pagerduty"])
async def test_the_webhooks_refuse_a_big_or_deep_body_and_take_the_next(
    edges: Edges, path: str
) -> None:
    async with httpx.AsyncClient(
        base_url=edges.incidents_url,
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        timeout=60,
    ) as http:
        assert_too_large(await http.post(path, content=b" " * (2 * MiB)))
        assert_too_large(await http.post(path, content=chunked(50 * MiB)))
        assert_too_deep(await http.post(path, content=deep()))
        if path == "/webhooks/alertmanager":
            good = await http.post(path, json=ALERT)
            assert (good.status_code, good.json()) == (200, {"accepted": 1})
        else:
            trigger = {
                "routing_key": "R", "event_action": "trigger", "dedup_key": "limits-pd",
                "payload": {"summary": "errors", "source": "prom", "severity": "critical",
                            "component": "checkout", "group": "prod-eu"},
            }  # fmt: skip
            good = await http.post(path, json=trigger)
            assert (good.status_code, good.json()["dedup_key"]) == (202, "limits-pd")
