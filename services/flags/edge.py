"""The flags service's HTTP edge: OpenFeature Remote Evaluation (OFREP) for any OpenFeature SDK,
and the admin API for tools that change flags.

OFREP is served at ``/ofrep/v1/...`` (the key's own environment) and at
``/environments/{env}/ofrep/v1/...`` (an OFREP provider's base URL names the environment). A
request without a valid key gets 401; a key for another environment gets 403. A malformed body
or context gets the OFREP error (400), never a 500; a body over LOCKSTEP_HTTP_MAX_BODY_BYTES (1
MiB) gets 413 and JSON nested deeper than LOCKSTEP_HTTP_MAX_JSON_DEPTH (64) 400, before either
is read whole or parsed (``BodyLimits``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.trace import Tracer

from events.flags import ChangeAction
from services.flags import rollouts, store
from services.flags.changes import Change, ChangeRefused, UnknownFlag, apply_now
from services.flags.definitions import DefinitionError
from services.flags.evaluator import FLAG_NOT_FOUND, ContextError, Evaluation, check_context
from services.flags.flag_sets import document
from services.flags.keys import ALL_ENVIRONMENTS, ApiKey, KeyRing
from services.flags.live import LiveFlagSets
from shared.clock import Clock
from shared.db import is_transient
from shared.http_edge import BodyLimits, HttpServer
from shared.settings import Settings

log = logging.getLogger(__name__)

MIN_POLLING_INTERVAL_MS = 1000
SUPPORTED_TYPES = ["boolean", "string", "int", "float", "object"]


class EvaluationLog:
    """When each flag was last evaluated, counted in memory and written every few seconds
    (for ``lockstep flags stale``: flags never evaluated)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[datetime, int]] = {}

    def saw(self, environment: str, keys: Iterator[str] | list[str]) -> None:
        now = datetime.now(UTC)
        for key in keys:
            _, count = self._seen.get((environment, key), (now, 0))
            self._seen[(environment, key)] = (now, count + 1)

    async def flush(self, pool: asyncpg.Pool) -> None:
        seen, self._seen = self._seen, {}
        if seen:
            async with pool.acquire() as conn:
                await store.record_evaluations(conn, seen)


def _body(e: Evaluation) -> dict[str, Any]:
    if e.error_code is not None:
        return {"key": e.key, "errorCode": e.error_code, "errorDetails": e.error_details}
    body: dict[str, Any] = {"key": e.key, "reason": e.reason, "variant": e.variant}
    if e.variant is not None:  # no variant: OFREP's "code default" (no value at all)
        body["value"] = e.value
    body["metadata"] = dict(e.metadata)
    return body


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return any(t.strip().removeprefix("W/") == etag for t in header.split(",")) or header == "*"


class Denied(Exception):
    def __init__(self, status: int, details: str) -> None:
        self.status = status
        self.details = details


def create_app(
    *,
    live: LiveFlagSets,
    keys: KeyRing,
    evaluations: EvaluationLog,
    pool: asyncpg.Pool,
    settings: Settings,
    tracer: Tracer,
    clock: Clock,
) -> FastAPI:
    app = FastAPI(
        title="Lockstep flags",
        description="OFREP flag evaluation and the flags admin API",
        version="1",
    )
    app.add_middleware(
        BodyLimits,
        max_body_bytes=settings.http_max_body_bytes,
        max_json_depth=settings.http_max_json_depth,
    )

    @app.exception_handler(Denied)
    async def denied(_request: Request, exc: Denied) -> Response:
        return _json(exc.status, {"errorDetails": exc.details})

    async def key_of(request: Request) -> ApiKey:
        raw = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if raw is None and auth.lower().startswith("bearer "):
            raw = auth[7:].strip()
        if not raw:
            raise Denied(401, "an API key is needed: X-API-Key or Authorization: Bearer")
        key = await keys.find(raw)
        if key is None:
            raise Denied(401, "this API key is not valid (unknown or revoked)")
        return key

    async def evaluating(request: Request, environment: str | None) -> str:
        key = await key_of(request)
        if environment is None:
            if key.environment == ALL_ENVIRONMENTS:
                raise Denied(400, "this key spans environments: use /environments/{env}/ofrep/v1")
            return key.environment
        if not key.may_evaluate(environment):
            raise Denied(403, f"this key is for {key.environment}, not {environment}")
        return environment

    async def context_of(request: Request) -> Mapping[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ContextError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ContextError("the request body must be a JSON object with a `context`")
        return check_context(payload.get("context"))

    async def evaluate_one(request: Request, environment: str | None, key: str) -> Response:
        env = await evaluating(request, environment)
        try:
            context = await context_of(request)
        except ContextError as exc:
            return _json(
                400, {"key": key, "errorCode": "INVALID_CONTEXT", "errorDetails": str(exc)}
            )
        flags = await live.get_or_load(env)
        result = flags.evaluate(key, context, now=clock().timestamp())
        if result.error_code != FLAG_NOT_FOUND:
            evaluations.saw(env, [key])
        status = (
            200
            if result.error_code is None
            else 404
            if result.error_code == FLAG_NOT_FOUND
            else 400
        )
        return _json(status, _body(result))

    async def evaluate_all(request: Request, environment: str | None) -> Response:
        env = await evaluating(request, environment)
        try:
            context = await context_of(request)
        except ContextError as exc:
            return _json(400, {"errorCode": "INVALID_CONTEXT", "errorDetails": str(exc)})
        flags = await live.get_or_load(env)
        results = flags.evaluate_all(context, now=clock().timestamp())
        evaluations.saw(env, flags.keys())
        body = json.dumps(
            {
                "flags": [_body(r) for r in results],
                "metadata": {"flagSetId": env, "version": str(flags.version)},
            },
            separators=(",", ":"),
        ).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    configuration = {
        "name": "Lockstep",
        "capabilities": {
            "cacheInvalidation": {
                "polling": {"enabled": True, "minPollingIntervalMs": MIN_POLLING_INTERVAL_MS}
            },
            "flagEvaluation": {"supportedTypes": SUPPORTED_TYPES},
        },
    }
    configuration_body = json.dumps(configuration, separators=(",", ":")).encode()
    configuration_etag = '"' + hashlib.sha256(configuration_body).hexdigest()[:32] + '"'

    async def get_configuration(request: Request, environment: str | None) -> Response:
        await evaluating(request, environment)
        if _etag_matches(request.headers.get("if-none-match"), configuration_etag):
            return Response(status_code=304, headers={"ETag": configuration_etag})
        return Response(
            configuration_body,
            media_type="application/json",
            headers={"ETag": configuration_etag},
        )

    @app.post("/ofrep/v1/evaluate/flags/{key}", tags=["OFREP"])
    async def ofrep_one(request: Request, key: str) -> Response:
        return await evaluate_one(request, None, key)

    @app.post("/environments/{environment}/ofrep/v1/evaluate/flags/{key}", tags=["OFREP"])
    async def ofrep_one_in(request: Request, environment: str, key: str) -> Response:
        return await evaluate_one(request, environment, key)

    @app.post("/ofrep/v1/evaluate/flags", tags=["OFREP"])
    async def ofrep_all(request: Request) -> Response:
        return await evaluate_all(request, None)

    @app.post("/environments/{environment}/ofrep/v1/evaluate/flags", tags=["OFREP"])
    async def ofrep_all_in(request: Request, environment: str) -> Response:
        return await evaluate_all(request, environment)

    @app.get("/ofrep/v1/configuration", tags=["OFREP"])
    async def ofrep_configuration(request: Request) -> Response:
        return await get_configuration(request, None)

    @app.get("/environments/{environment}/ofrep/v1/configuration", tags=["OFREP"])
    async def ofrep_configuration_in(request: Request, environment: str) -> Response:
        return await get_configuration(request, environment)

    # --- admin API --------------------------------------------------------------------------

    async def changing(request: Request, environment: str) -> ApiKey:
        key = await key_of(request)
        if not key.may_change(environment):
            raise Denied(403, f"this key may not change flags in {environment}")
        return key

    async def json_body(request: Request) -> dict[str, Any]:
        try:
            payload = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise Denied(400, f"the request body is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise Denied(400, "the request body must be a JSON object")
        return payload

    async def change(
        request: Request, environment: str, key: str, action: ChangeAction
    ) -> Response:
        api_key = await changing(request, environment)
        body = await json_body(request)
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise Denied(400, "say why: a `reason` is required for every change")
        named = body.get("by")  # who, as the caller says; the key is what vouches for it
        by = f"{named} (api-key {api_key.name})" if named else f"api-key {api_key.name}"
        kwargs: dict[str, Any] = {}
        if action == "set":
            kwargs["definition"] = body.get("definition")
            if not isinstance(kwargs["definition"], dict):
                raise Denied(400, "`definition` must be the flagd flag definition (an object)")
        if action == "rollout":
            variant, schedule = body.get("variant"), body.get("schedule")
            if not isinstance(variant, str) or not isinstance(schedule, str):
                raise Denied(400, "a rollout needs `variant` and `schedule` (10%,25%@1h,…)")
            try:
                kwargs["steps"] = rollouts.parse_schedule(schedule)
            except rollouts.ScheduleError as exc:
                raise Denied(400, f"schedule: {exc}") from exc
            kwargs["variant"] = variant
        request_change = Change(environment, key, action, str(by), reason, "api", **kwargs)
        try:
            event = await apply_now(pool, settings, request_change, tracer=tracer, clock=clock)
        except UnknownFlag as exc:
            return _json(404, {"errorDetails": str(exc)})
        except DefinitionError as exc:
            return _json(
                422,
                {
                    "errorDetails": str(exc),
                    "problems": [{"path": p.path, "reason": p.reason} for p in exc.problems],
                },
            )
        except ChangeRefused as exc:
            return _json(409, {"errorDetails": str(exc)})
        if event is None:
            return _json(200, {"changed": False})
        c = event.subject.content
        return _json(200, {"changed": True, "version": c.version, "eventId": event.id})

    @app.get("/admin/v1/environments/{environment}/flags", tags=["admin"])
    async def admin_export(request: Request, environment: str) -> Response:
        await changing(request, environment)
        async with pool.acquire() as conn:
            doc, _ = await document(conn, environment)
        return _json(200, doc)

    @app.put("/admin/v1/environments/{environment}/flags/{key}", tags=["admin"])
    async def admin_set(request: Request, environment: str, key: str) -> Response:
        return await change(request, environment, key, "set")

    @app.delete("/admin/v1/environments/{environment}/flags/{key}", tags=["admin"])
    async def admin_delete(request: Request, environment: str, key: str) -> Response:
        return await change(request, environment, key, "delete")

    @app.post("/admin/v1/environments/{environment}/flags/{key}/{action}", tags=["admin"])
    async def admin_action(request: Request, environment: str, key: str, action: str) -> Response:
        actions: dict[str, ChangeAction] = {
            "enable": "enable",
            "disable": "disable",
            "rollout": "rollout",
            "halt-rollout": "halt-rollout",
        }
        if action not in actions:
            return _json(404, {"errorDetails": f"no action {action!r}"})
        return await change(request, environment, key, actions[action])

    @app.get("/admin/v1/environments/{environment}/flags/{key}/history", tags=["admin"])
    async def admin_history(request: Request, environment: str, key: str) -> Response:
        await changing(request, environment)
        async with pool.acquire() as conn:
            rows = await store.history(conn, environment, key)
        return _json(
            200,
            [
                {
                    "version": r.version,
                    "action": r.action,
                    "source": r.source,
                    "by": r.changed_by,
                    "reason": r.reason,
                    "at": r.at.isoformat(),
                    "requestId": r.request_id,
                }
                for r in rows
            ],
        )

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:  # never a bare 500
        log.exception("flags: unexpected error: %r", exc)
        return JSONResponse({"errorDetails": "internal error; see the service log"}, 500)

    return app


class FlagEdge:
    """The HTTP edge as a service companion: serves until the service stops."""

    name = "flags http edge"

    def __init__(self, pool: asyncpg.Pool, settings: Settings, tracer: Tracer, clock: Clock):
        self.settings = settings
        self.pool = pool
        schema = settings.db_schema("flags")
        # its LISTEN connection, as the service's own role, like its pool
        self.live = LiveFlagSets(pool, settings.pg_dsn_for("flags"), schema)
        self.evaluations = EvaluationLog()
        self.app = create_app(
            live=self.live,
            keys=KeyRing(pool),
            evaluations=self.evaluations,
            pool=pool,
            settings=settings,
            tracer=tracer,
            clock=clock,
        )
        self.port: int | None = None
        self.started = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        server = HttpServer(
            self.app,
            host=self.settings.flags_http_host,
            port=self.settings.flags_http_port,
            name="flags: OFREP and admin API",
        )
        await server.start()
        keeping = asyncio.create_task(self.live.run(stop))
        self.port = server.port
        self.started.set()
        last_flush = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            if time.monotonic() - last_flush >= 5.0 or stop.is_set():
                await self._flush()
                last_flush = time.monotonic()
            await server.check()
        await server.stop()
        await keeping
        await self._flush()

    async def _flush(self) -> None:
        try:
            await self.evaluations.flush(self.pool)
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, asyncpg.PostgresError)):
                raise
            log.warning("flags: could not record evaluations: %r", exc)
