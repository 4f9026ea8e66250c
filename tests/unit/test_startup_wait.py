"""A service started while Postgres or Kafka is away waits for it (no server): the one retry
loop (``shared.db.until_up``) tries again what says "not now", gives up with a clear error on
what waiting will not mend, and returns at once when told to stop; and the service's start-up
(its pool, its consumer, ``serve`` under SIGTERM) and the flags service's reload go through it
or survive the same errors."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any, ClassVar

import asyncpg
import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    UnsupportedVersionError,
)
from opentelemetry.trace import NoOpTracer

import shared.bus.consumer
import shared.service
from services.flags.live import LiveFlagSets
from shared.bus.consumer import EventConsumer
from shared.bus.handlers import Router
from shared.bus.producer import kafka_is_transient
from shared.db import NotComingUp, is_transient, pg_where, until_up
from shared.service import RunningService, ServiceSpec, serve
from shared.settings import Settings

SETTINGS = Settings(
    namespace="unit", trace_dir=None, kafka_bootstrap="127.0.0.1:1", kafka_principal="admin"
)  # "things" is no principal of the access file
SPEC = ServiceSpec(name="things", router=Router())


class Script:
    """An attempt that fails with each of ``errors`` in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: str = "up") -> None:
        self.errors = list(errors)
        self.result = result
        self.tries = 0
        self.tried = asyncio.Event()

    async def __call__(self) -> str:
        self.tries += 1
        self.tried.set()
        if self.errors:
            raise self.errors.pop(0)
        return self.result


async def test_transient_errors_are_tried_again_each_with_one_clear_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempt = Script(
        ConnectionRefusedError(111, "Connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    )
    with caplog.at_level(logging.WARNING, logger="shared.db"):
        got = await until_up(
            attempt, stop=asyncio.Event(), who="artifacts", what="Postgres at db:5432/x",
            first_s=0.01, longest_s=0.02,
        )  # fmt: skip
    assert got == "up"
    assert attempt.tries == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("artifacts: Postgres at db:5432/x not reachable (ConnectionRefused")
    assert "(CannotConnectNowError: the database system is starting up)" in lines[1]
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["0.0s", "0.0s", "0.0s"]


async def test_the_wait_doubles_up_to_its_cap(caplog: pytest.LogCaptureFixture) -> None:
    attempt = Script(*(OSError("away") for _ in range(5)))
    with caplog.at_level(logging.WARNING, logger="shared.db"):
        await until_up(
            attempt, stop=asyncio.Event(), who="s", what="it", first_s=0.01, longest_s=0.04
        )
    waits = [r.args[-1] for r in caplog.records if isinstance(r.args, tuple)]
    assert waits == [0.01, 0.02, 0.04, 0.04, 0.04]


async def test_an_error_waiting_will_not_mend_gives_up_at_once_and_says_who_and_what() -> None:
    attempt = Script(asyncpg.InvalidPasswordError('password authentication failed for "x"'))
    with pytest.raises(NotComingUp) as caught:
        await until_up(attempt, stop=asyncio.Event(), who="gates", what="Postgres at h:1/db")
    assert attempt.tries == 1
    assert str(caught.value) == (
        "gates: Postgres at h:1/db refused: InvalidPasswordError: password authentication "
        'failed for "x"'
    )
    assert isinstance(caught.value.__cause__, asyncpg.InvalidPasswordError)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.ClientConfigurationError("sslmode is not one of: disable, allow, ..."),
        ssl.SSLCertVerificationError("certificate verify failed"),
        FileNotFoundError(2, "No such file or directory", "/no/root.crt"),
        PermissionError(13, "Permission denied", "/var/run/postgresql"),
    ],
)
async def test_a_mistake_in_the_settings_gives_up_at_once(error: Exception) -> None:
    """An InterfaceError or OSError that waiting will not mend: a bad DSN option, a
    certificate, a file; the operator is told, not kept waiting forever."""
    attempt = Script(error)
    with pytest.raises(NotComingUp):
        await until_up(attempt, stop=asyncio.Event(), who="gates", what="Postgres at h:1/db")
    assert attempt.tries == 1


async def test_stop_during_the_wait_returns_at_once() -> None:
    stop = asyncio.Event()
    attempt = Script(*(ConnectionRefusedError() for _ in range(100)))
    waiting = asyncio.create_task(
        until_up(attempt, stop=stop, who="s", what="it", first_s=30, longest_s=30)
    )
    await attempt.tried.wait()
    await asyncio.sleep(0.05)  # into the wait that follows the refusal
    started = time.monotonic()
    stop.set()
    assert await asyncio.wait_for(waiting, 2) is None
    assert time.monotonic() - started < 0.5
    assert attempt.tries == 1


async def test_stop_during_a_try_that_hangs_cancels_it_and_returns_at_once() -> None:
    stop = asyncio.Event()
    began, ended = asyncio.Event(), asyncio.Event()

    async def hangs() -> str:
        began.set()
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()
        return "never"

    waiting = asyncio.create_task(until_up(hangs, stop=stop, who="s", what="it"))
    await began.wait()
    stop.set()
    assert await asyncio.wait_for(waiting, 1) is None
    assert ended.is_set()


async def test_already_stopped_tries_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    attempt = Script()
    assert await until_up(attempt, stop=stop, who="s", what="it") is None
    assert attempt.tries == 0


def test_what_is_transient() -> None:
    assert is_transient(ConnectionRefusedError())
    assert is_transient(asyncpg.CannotConnectNowError("starting up"))
    assert is_transient(asyncpg.InterfaceError("cannot call Transaction.__aexit__(): closed"))
    assert not is_transient(asyncpg.InvalidPasswordError("no"))
    assert not is_transient(asyncpg.InvalidCatalogNameError("no such database"))
    assert kafka_is_transient(KafkaConnectionError("Unable to bootstrap"))
    assert kafka_is_transient(NodeNotReadyError())
    assert kafka_is_transient(KafkaTimeoutError())
    assert kafka_is_transient(OSError("unreachable"))
    assert not kafka_is_transient(GroupAuthorizationFailedError())
    assert not kafka_is_transient(UnsupportedVersionError())
    assert not kafka_is_transient(ValueError("bad config"))


def test_where_postgres_is_names_no_password() -> None:
    assert pg_where("postgresql://u:secret@db.example:5433/lockstep?sslmode=disable") == (
        "db.example:5433/lockstep"
    )


async def reached(condition: Callable[[], bool], while_running: asyncio.Task[Any]) -> None:
    """Wait (bounded) until ``condition`` holds, however slow the machine; the task under test
    must not end meanwhile."""

    async def poll() -> None:
        while not condition():
            assert not while_running.done(), (
                while_running.exception() if while_running.done() else None
            )
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 30)
    assert not while_running.done(), while_running.exception() if while_running.done() else None


class RefusingPools:
    """``create_service_pool`` with Postgres away: refused, and counted."""

    def __init__(self) -> None:
        self.tries = 0

    async def __call__(self, *_: Any, **__: Any) -> Any:
        self.tries += 1
        raise ConnectionRefusedError(111, "Connect call failed")


async def test_a_service_waits_for_postgres_and_ends_unset_when_told_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = RefusingPools()
    monkeypatch.setattr(shared.service, "create_service_pool", pools)
    service = RunningService(SPEC, SETTINGS)
    setting_up = asyncio.create_task(service.setup())
    await reached(lambda: pools.tries == 2, setting_up)  # tries at 0 s and 0.5 s, the next at 1.5 s
    service.stop_requested.set()
    await asyncio.wait_for(setting_up, 1)
    assert not service.ready
    await service.stop()  # nothing to close; no error


async def test_serve_under_sigterm_while_waiting_for_postgres_returns_cleanly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pools = RefusingPools()
    monkeypatch.setattr(shared.service, "create_service_pool", pools)
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(serve(SPEC, SETTINGS))
    try:
        with caplog.at_level(logging.INFO, logger="shared.service"):
            await reached(lambda: pools.tries == 1, serving)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(serving, 2)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    said = [r.getMessage() for r in caplog.records]
    assert "things: stopped before it was up" in said
    assert any("things: Postgres at 127.0.0.1:5432/lockstep not reachable" in s for s in said)


class FakeKafkaConsumer:
    """An ``AIOKafkaConsumer`` whose broker is away: ``start`` is refused."""

    made: ClassVar[list[FakeKafkaConsumer]] = []

    def __init__(self, *_: Any, **__: Any) -> None:
        self.stopped = False
        FakeKafkaConsumer.made.append(self)

    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.stopped = True


async def test_the_consumer_waits_for_kafka_and_leaves_no_consumer_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    FakeKafkaConsumer.made = []

    class Unreachable:
        def consumer(self, *a: Any, **kw: Any) -> FakeKafkaConsumer:
            return FakeKafkaConsumer(*a, **kw)

        def producer(self, *a: Any, **kw: Any) -> Any:
            raise AssertionError("not used")

    consumer = EventConsumer(
        service="artifacts", router=Router(), pool=None,  # type: ignore[arg-type]
        settings=SETTINGS, tracer=NoOpTracer(), schema="unit_artifacts", transport=Unreachable(),
    )  # fmt: skip
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="shared.bus.consumer"):
        running = asyncio.create_task(consumer.run(stop))
        await reached(lambda: len(FakeKafkaConsumer.made) == 2, running)  # at 0 s and 0.5 s
        stop.set()
        await asyncio.wait_for(running, 5)
    assert len(FakeKafkaConsumer.made) == 2
    assert all(c.stopped for c in FakeKafkaConsumer.made)
    assert caplog.records[0].getMessage() == (
        "artifacts: Kafka at 127.0.0.1:1 not reachable (KafkaConnectionError); trying again in 0.5s"
    )


class GonePool:
    """A pool whose connection died inside the transaction, as asyncpg then reports it."""

    def __init__(self) -> None:
        self.tries = 0

    def acquire(self) -> GonePool:
        return self

    async def __aenter__(self) -> Any:
        self.tries += 1
        raise asyncpg.InterfaceError(
            "cannot call Transaction.__aexit__(): the underlying connection is closed"
        )

    async def __aexit__(self, *_: Any) -> None:
        return None


class FakeListener:
    def __init__(self) -> None:
        self.closed = False

    async def add_listener(self, *_: Any) -> None:
        return None

    def is_closed(self) -> bool:
        return self.closed

    async def close(self) -> None:
        self.closed = True

    def terminate(self) -> None:
        self.closed = True


async def test_flag_reloads_survive_a_connection_lost_mid_transaction(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listeners: list[FakeListener] = []

    async def connect(*_: Any, **__: Any) -> FakeListener:
        listeners.append(FakeListener())
        return listeners[-1]

    monkeypatch.setattr(asyncpg, "connect", connect)
    pool = GonePool()
    live = LiveFlagSets(pool, "postgresql://x", "unit_flags", check_every_s=0.05)  # type: ignore[arg-type]
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="services.flags.live"):
        running = asyncio.create_task(live.run(stop))
        await reached(lambda: pool.tries >= 3 and len(listeners) >= 3, running)
        stop.set()
        await asyncio.wait_for(running, 5)
    assert pool.tries >= 3
    assert "could not check flag revisions: InterfaceError" in caplog.records[0].getMessage()
    assert len(listeners) >= 3 and all(listener.closed for listener in listeners)
