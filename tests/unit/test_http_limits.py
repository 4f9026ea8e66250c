"""What every HTTP edge accepts (shared.http_edge.BodyLimits, in front of the flags and the
incidents apps): a body over the limit is refused with 413 before it is read, JSON nested too
deep with 400 before it is parsed, each answer JSON that says why and what the limit is; what
is within the limits reaches the app exactly as sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from shared.http_edge import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH, BodyLimits, json_depth
from shared.settings import Settings

LIMIT = 1024


class Echo:
    """An app that says what body it got and how it parsed, and counts its calls."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.bodies.append(body)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            return JSONResponse({"app": "not JSON"}, 422)
        return JSONResponse({"bytes": len(body), "type": type(parsed).__name__})

    def app(self, **limits: int) -> BodyLimits:
        inner = Starlette(routes=[Route("/", self.endpoint, methods=["GET", "POST"])])
        return BodyLimits(inner, **limits)


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def chunks(size: int, count: int, pulled: list[int]) -> Iterator[bytes]:
    for i in range(count):
        pulled.append(i)
        yield b" " * size


async def stream(size: int, count: int, pulled: list[int]) -> AsyncIterator[bytes]:
    for chunk in chunks(size, count, pulled):
        yield chunk


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


def test_the_defaults_are_a_mebibyte_and_64_levels() -> None:
    assert (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH) == (1024 * 1024, 64)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"", 0),
        (b"42", 0),
        (b'{"a": 1}', 1),
        (b'{"a": [1, {"b": [[]]}], "c": {}}', 5),
        (b"[[],[],[[]]]", 3),
        (b'["[[[[", "{{{{"]', 1),  # brackets in strings are text
        (b'[" \\" [[[ \\\\", [["x\\\\"]]]', 3),  # escaped quotes and backslashes end nothing
        (b'{"k": "unterminated [[[[[[', 1),  # not JSON (the parser says so), but not deep
        (b"[[[[", 4),  # opened and never closed: as deep as it opens
    ],
)
def test_json_depth_counts_arrays_and_objects_not_strings(raw: bytes, depth: int) -> None:
    assert json_depth(raw, stop_above=100) == depth


def test_json_depth_stops_counting_past_the_limit() -> None:
    assert json_depth(nested(200_000), stop_above=64) == 65
    assert json_depth(nested(64), stop_above=64) == 64


async def test_a_body_within_the_limit_reaches_the_app_as_sent_in_one_piece_or_many() -> None:
    echo = Echo()
    body = json.dumps({"context": {"targetingKey": "ann", "pad": "x" * 900}}).encode()
    async with client(echo.app(max_body_bytes=LIMIT)) as http:
        whole = await http.post("/", content=body)
        at_limit = b'"' + b"x" * (LIMIT - 2) + b'"'
        exactly = await http.post("/", content=pieces(at_limit, 256))  # chunked, no length
        empty = await http.get("/")
    assert (whole.status_code, whole.json()) == (200, {"bytes": len(body), "type": "dict"})
    assert (exactly.status_code, exactly.json()) == (200, {"bytes": LIMIT, "type": "str"})
    assert (empty.status_code, empty.json()) == (200, {"bytes": 0, "type": "NoneType"})
    assert echo.bodies == [body, at_limit, b""]


async def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    echo = Echo()
    reads: list[Message] = []
    sent: list[Message] = []

    async def receive() -> Message:
        message: Message = {"type": "http.request", "body": b"x" * LIMIT, "more_body": True}
        reads.append(message)
        return message

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"content-length", str(50 * 1024 * 1024).encode())],
        "server": ("edge", 80), "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    await echo.app(max_body_bytes=LIMIT)(scope, receive, send)
    assert reads == [] and echo.bodies == []
    assert sent[0]["status"] == 413
    answer = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert answer == {
        "errorCode": "BODY_TOO_LARGE",
        "errorDetails": f"the body is 52428800 bytes; at most {LIMIT} bytes are accepted: "
        "send a smaller body",
        "limit": LIMIT,
    }


async def test_a_chunked_body_is_cut_at_the_limit_without_reading_the_rest() -> None:
    echo = Echo()
    pulled: list[int] = []
    async with client(echo.app(max_body_bytes=LIMIT)) as http:
        r = await http.post("/", content=stream(100, 10_000, pulled))  # a megabyte, no length
        one_over = await http.post("/", content=stream(LIMIT + 1, 1, []))
    assert r.status_code == one_over.status_code == 413
    assert r.json()["errorCode"] == "BODY_TOO_LARGE" and r.json()["limit"] == LIMIT
    assert "more than 1024 bytes" in r.json()["errorDetails"]
    assert len(pulled) == 11  # 1100 bytes: the chunk that went past the limit, and no more
    assert echo.bodies == []


async def test_a_content_length_that_is_not_a_number_is_refused() -> None:
    echo = Echo()
    async with client(echo.app()) as http:
        r = await http.post("/", content=b"{}", headers={"Content-Length": b"\xb2"})
    assert r.status_code == 400
    assert r.json()["errorCode"] == "INVALID_CONTENT_LENGTH"
    assert echo.bodies == []


async def test_json_nested_too_deep_is_refused_before_anything_parses_it() -> None:
    echo = Echo()
    async with client(echo.app(max_json_depth=8)) as http:
        at_limit = await http.post("/", content=nested(8))
        over = await http.post("/", content=nested(9))
        very_deep = await http.post("/", content=nested(200_000))  # json.loads: RecursionError
        in_strings = await http.post("/", content=json.dumps(["[" * 1000]).encode())
    assert (at_limit.status_code, at_limit.json()["type"]) == (200, "list")
    assert in_strings.status_code == 200
    for r in (over, very_deep):
        assert r.status_code == 400
        assert r.json() == {
            "errorCode": "NESTING_TOO_DEEP",
            "errorDetails": "the JSON body nests arrays and objects more than 8 deep; "
            "send a flatter document",
            "limit": 8,
        }
    assert echo.bodies == [nested(8), json.dumps(["[" * 1000]).encode()]


async def test_what_is_not_json_is_left_to_the_app_to_refuse() -> None:
    echo = Echo()
    async with client(echo.app()) as http:
        r = await http.post("/", content=b"not json at all")
    assert (r.status_code, r.json()) == (422, {"app": "not JSON"})


async def test_the_webhook_edge_refuses_big_and_deep_bodies_before_its_token_or_parser() -> None:
    import asyncpg

    from services.incidents.edge import create_app

    app = create_app(cast(asyncpg.Pool, None), Settings(incidents_webhook_token="s3cret"))
    big = b'{"alerts": [' + b" " * DEFAULT_MAX_BODY_BYTES + b"]}"
    async with client(app) as http:
        too_big = await http.post("/webhooks/alertmanager?token=s3cret", content=big)
        too_deep = await http.post("/v2/enqueue?token=s3cret", content=nested(200_000))
        not_json = await http.post("/webhooks/alertmanager?token=s3cret", content=b"{")
    assert (too_big.status_code, too_big.json()["errorCode"]) == (413, "BODY_TOO_LARGE")
    assert (too_deep.status_code, too_deep.json()["errorCode"]) == (400, "NESTING_TOO_DEEP")
    assert not_json.status_code == 400
    assert not_json.json()["problems"][0].startswith("the body is not JSON")


@pytest.mark.parametrize(
    "path",
    [
        "/ofrep/v1/evaluate/flags/new-checkout",
        "/environments/prod-eu/ofrep/v1/evaluate/flags",
        "/admin/v1/environments/prod-eu/flags/new-checkout/disable",
    ],
)
async def test_the_flags_edge_refuses_big_and_deep_bodies_on_ofrep_and_the_admin_api(
    path: str,
) -> None:
    from services.flags.edge import create_app

    nothing = cast(Any, None)  # refused before a key is looked up or a flag set loaded
    app = create_app(
        live=nothing, keys=nothing, evaluations=nothing, pool=nothing, settings=Settings(),
        tracer=nothing, clock=nothing,
    )  # fmt: skip
    pulled: list[int] = []
    async with client(app) as http:
        too_big = await http.post(path, content=b" " * (DEFAULT_MAX_BODY_BYTES + 1))
        chunked = await http.post(path, content=stream(64 * 1024, 800, pulled))  # 50 MiB
        too_deep = await http.post(path, content=b'{"context": ' + nested(200_000) + b"}")
    assert too_big.status_code == chunked.status_code == 413
    assert len(pulled) == 17  # 1 MiB and the chunk past it: the rest never read
    assert too_deep.status_code == 400
    assert too_deep.json()["errorCode"] == "NESTING_TOO_DEEP"
