"""An HTTP edge a service runs beside its consumer (uvicorn, in the service's event loop),
and the limits every edge's app puts in front of itself (``BodyLimits``).

uvicorn's own signal handlers are left out: the service's SIGTERM drain decides when the
edge stops (``stop``), first of all the service's parts, so no request arrives mid-drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: Any, *, host: str, port: int, name: str) -> None:
        self.name = name
        self._config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = _QuietServer(self._config)
        self._serving: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        """Listen; raises if the port cannot be had."""
        self._serving = asyncio.create_task(self._serve())
        while not self._server.started and not self._serving.done():  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.01)
        if self._serving.done():
            await self._serving  # raises why it stopped
            raise OSError(f"{self.name}: stopped before it listened")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.started.set()
        log.info("%s on http://%s:%s", self.name, self._config.host, self.port)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind: say so, do not exit
            raise OSError(
                f"{self.name}: could not listen on {self._config.host}:{self._config.port} "
                f"(is the port taken?)"
            ) from exc

    async def check(self) -> None:
        """Raise if the server stopped on its own."""
        if self._serving is not None and self._serving.done():
            await self._serving
            raise RuntimeError(f"{self.name}: stopped serving")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._serving is not None:
            await self._serving

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` (a service companion)."""
        await self.start()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            await self.check()
        await self.stop()


# --- what an edge accepts -------------------------------------------------------------------

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64

# A JSON string, escapes and all (an unterminated one runs to the end: the parser refuses it).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENING = frozenset(b"[{")
_DIGITS = re.compile(r"[0-9]+")


def json_depth(raw: bytes, stop_above: int) -> int:
    """How deep the arrays and objects of ``raw`` nest, counted without recursion and without
    parsing (brackets inside strings do not count); counting stops once past ``stop_above``.
    Meant to run before ``json.loads``, whose recursion a deep document exhausts."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


class BodyLimits:
    """ASGI middleware in front of an edge's app: a body over ``max_body_bytes`` is refused
    with 413 before it is read (a ``Content-Length`` over the limit is refused at once; a
    chunked body is counted as it arrives and refused at the first byte past the limit), and
    JSON nested deeper than ``max_json_depth`` gets 400 before anything parses it. The app
    sees the body whole, as sent. Every refusal is JSON: ``errorCode``, ``errorDetails`` (what
    is wrong and what to do) and the ``limit``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if _DIGITS.fullmatch(declared.strip()) is None:
                await _refuse(
                    scope,
                    receive,
                    send,
                    400,
                    "INVALID_CONTENT_LENGTH",
                    f"Content-Length {declared[:40]!r} is not a number of bytes",
                    limit,
                )
                return
            if int(declared) > limit:
                await self._too_large(scope, receive, send, f"{int(declared)} bytes")
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client has gone: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(scope, receive, send, f"more than {limit} bytes")
                return
            more = message.get("more_body", False)
        if body and json_depth(bytes(body), self.max_json_depth) > self.max_json_depth:
            await _refuse(
                scope,
                receive,
                send,
                400,
                "NESTING_TOO_DEEP",
                f"the JSON body nests arrays and objects more than "
                f"{self.max_json_depth} deep; send a flatter document",
                self.max_json_depth,
            )
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        limit = self.max_body_bytes
        await _refuse(
            scope,
            receive,
            send,
            413,
            "BODY_TOO_LARGE",
            f"the body is {size}; at most {limit} bytes are accepted: send a smaller body",
            limit,
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body, read already, as one message; then the client's own (its disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, details: str, limit: int
) -> None:
    log.info("%s %s refused (%s): %s", scope.get("method"), scope.get("path"), status, details)
    answer = JSONResponse({"errorCode": code, "errorDetails": details, "limit": limit}, status)
    await answer(scope, receive, send)
