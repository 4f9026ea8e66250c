"""The incidents service's HTTP edge: the webhooks tools already send, turned into
``signal.observed`` on Kafka (written to the outbox, so a 2xx means the signals will be
published). Prometheus Alertmanager posts to ``/webhooks/alertmanager``; a PagerDuty Events API
v2 sender posts to ``/webhooks/pagerduty`` (or ``/v2/enqueue``). A malformed payload gets 400
with every reason, and nothing of it is published; a body over LOCKSTEP_HTTP_MAX_BODY_BYTES (1
MiB) gets 413 and JSON nested deeper than LOCKSTEP_HTTP_MAX_JSON_DEPTH (64) 400, before either
is read whole or parsed (``BodyLimits``). The webhooks are closed by default: a post needs
LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN (compared in constant time), or 401; only
LOCKSTEP_INCIDENTS_WEBHOOK_OPEN=true accepts posts without one, and the start-up log says so."""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from events.signals import SignalObserved
from services.incidents.webhooks import PayloadRefused, from_alertmanager, from_pagerduty
from shared.bus.outbox import write_and_wake
from shared.bus.signing import signed_record
from shared.http_edge import BodyLimits
from shared.settings import Settings
from shared.telemetry import current_trace_headers

log = logging.getLogger(__name__)

CLOSED = (
    "no token is set: set LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN and send it (Authorization: "
    "Bearer, or ?token=), or LOCKSTEP_INCIDENTS_WEBHOOK_OPEN=true to accept posts from anyone"
)


def create_app(pool: asyncpg.Pool, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="Lockstep incidents", description="Webhooks in: health signals", version="1"
    )
    app.add_middleware(
        BodyLimits,
        max_body_bytes=settings.http_max_body_bytes,
        max_json_depth=settings.http_max_json_depth,
    )
    schema = settings.db_schema("incidents")

    token = settings.incidents_webhook_token
    if token:
        log.info("incidents: webhooks need the token (LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN)")
    elif settings.incidents_webhook_open:
        log.warning(
            "incidents: webhooks are OPEN: anyone who reaches the edge may post alerts "
            "(LOCKSTEP_INCIDENTS_WEBHOOK_OPEN=true, no LOCKSTEP_INCIDENTS_WEBHOOK_TOKEN)"
        )
    else:
        log.warning("incidents: webhooks are closed: %s", CLOSED)

    def authorised(request: Request) -> bool:
        if not token:
            return settings.incidents_webhook_open
        given = request.query_params.get("token") or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def refusal() -> str:
        return "a valid token is needed" if token else f"webhooks are closed: {CLOSED}"

    async def body_of(request: Request) -> Any:
        try:  # BodyLimits has seen to its size and its depth
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise PayloadRefused([f"the body is not JSON: {exc}"]) from exc

    async def publish(signals: list[SignalObserved]) -> None:
        records = [  # signals are no decisions: a decision written here would have no key
            signed_record(
                s, topic=settings.topic(s.TOPIC), key=None, trace_headers=current_trace_headers()
            )
            for s in signals
        ]
        async with pool.acquire() as conn, conn.transaction():
            await write_and_wake(conn, records, schema)

    @app.post("/webhooks/alertmanager", tags=["webhooks"])
    async def alertmanager(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": refusal()}, 401)
        try:
            signals = from_alertmanager(await body_of(request), datetime.now(UTC))
        except PayloadRefused as exc:
            return JSONResponse({"error": "refused", "problems": exc.problems}, 400)
        await publish(signals)
        return JSONResponse({"accepted": len(signals)}, 200)

    @app.post("/webhooks/pagerduty", tags=["webhooks"])
    @app.post("/v2/enqueue", tags=["webhooks"])
    async def pagerduty(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"status": "unauthorized", "message": refusal()}, 401)
        try:
            signal = from_pagerduty(await body_of(request), datetime.now(UTC))
        except PayloadRefused as exc:
            return JSONResponse(
                {"status": "invalid event", "message": "Event object is invalid",
                 "errors": exc.problems}, 400,
            )  # fmt: skip
        await publish([signal])
        return JSONResponse(
            {"status": "success", "message": "Event processed",
             "dedup_key": signal.subject.content.dedup_key}, 202,
        )  # fmt: skip

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("incidents: unexpected error: %r", exc)
        return JSONResponse({"error": "internal error; see the service log"}, 500)

    return app
