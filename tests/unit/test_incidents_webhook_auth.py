"""The incidents webhooks are closed by default: with no token configured a post is refused
(401, saying which setting opens them) and nothing reaches the outbox; a token must match;
only an explicit LOCKSTEP_INCIDENTS_WEBHOOK_OPEN accepts anyone, and the start-up log says
so."""

from __future__ import annotations

import logging
from typing import Any, cast

import asyncpg
import httpx
import pytest

from services.incidents.edge import create_app
from shared.settings import Settings
from tests.unit.test_incidents_webhook_times import NoPool

PATHS = ["/webhooks/alertmanager", "/webhooks/pagerduty", "/v2/enqueue"]
BODY: dict[str, Any] = {"alerts": "not a list"}  # past the token, refused with a 400


def edge(**settings: Any) -> httpx.AsyncClient:
    app = create_app(cast(asyncpg.Pool, NoPool()), Settings(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


@pytest.mark.parametrize("path", PATHS)
async def test_with_no_token_set_the_webhooks_refuse_everyone(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "services.incidents.edge"):
        async with edge() as http:
            r = await http.post(path, json=BODY, headers={"Authorization": "Bearer anything"})
    assert r.status_code == 401
    assert "LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN" in r.text and "WEBHOOK_OPEN" in r.text
    assert any("webhooks are closed" in m for m in caplog.messages)


@pytest.mark.parametrize("path", PATHS)
async def test_a_token_must_match(path: str) -> None:
    async with edge(incidents_webhook_token="s3cret") as http:
        none = await http.post(path, json=BODY)
        wrong = await http.post(path, json=BODY, headers={"Authorization": "Bearer s3cre"})
        query = await http.post(f"{path}?token=s3cret", json=BODY)
        bearer = await http.post(path, json=BODY, headers={"Authorization": "Bearer s3cret"})
    assert (none.status_code, wrong.status_code) == (401, 401)
    assert "a valid token is needed" in none.text
    assert (query.status_code, bearer.status_code) == (400, 400)  # let in; the body refused


async def test_open_only_when_asked_and_said_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "services.incidents.edge"):
        async with edge(incidents_webhook_open=True) as http:
            r = await http.post("/webhooks/alertmanager", json=BODY)
    assert r.status_code == 400
    assert any("webhooks are OPEN" in m for m in caplog.messages)
