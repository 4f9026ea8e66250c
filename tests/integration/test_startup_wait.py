"""`lockstep run artifacts` started while Postgres or Kafka is away, as an operator meets it:
the process stays up and says, one line a try, what it waits for; when the port answers (a
forwarder to the real server is opened on it) the service comes up by itself and does its
work; SIGTERM ends it with 0, also while it is still waiting."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from events import KafkaRecord
from services.artifacts.app import SPEC as ARTIFACTS
from shared.bus.outbox import write_and_wake
from shared.service import service_pool
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

# A TCP forwarder, run as a process of its own: 127.0.0.1:<port> -> 127.0.0.1:<to>.
FORWARDER = """
import asyncio, sys
port, to = int(sys.argv[1]), int(sys.argv[2])
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()
async def handle(r, w):
    try:
        ur, uw = await asyncio.open_connection("127.0.0.1", to)
    except OSError:
        w.close()
        return
    await asyncio.gather(pipe(r, uw), pipe(ur, w))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def closed_port() -> int:
    """A port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", 1)[0])


class Service:
    """`lockstep run artifacts` as a process, its log in a file."""

    def __init__(
        self, ns: Namespace, log: Path, *, argv: tuple[str, ...] = ("run", "artifacts"), **env: str
    ) -> None:
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *argv],
            env={
                **os.environ,
                "LOCKSTEP_NAMESPACE": ns.settings.namespace,
                "LOCKSTEP_TRACE_DIR": "",
                "LOCKSTEP_LOG_LEVEL": "INFO",
                "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),  # the namespace's keys
                **env,
            },
            cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def lines(self, containing: str) -> list[str]:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if containing in line]

    async def until_logged(self, containing: str, times: int = 1, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines(containing)) < times:
            assert self.proc.poll() is None, f"the service exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, (
                f"{containing!r} not logged {times} times in {timeout}s:\n{self.log.read_text()}"
            )
            await asyncio.sleep(0.1)

    async def sigterm(self) -> int:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, 10)
        assert time.monotonic() - started < 5, "SIGTERM took too long"
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


class Forwarder:
    def __init__(self, port: int, to: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORWARDER, str(port), str(to)],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"listening\n"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def test_a_service_started_before_postgres_waits_then_comes_up(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    port = closed_port()
    real = ns.settings.pg_dsn
    head, tail = real.rsplit("@", 1)
    host_port, rest = tail.split("/", 1)
    dsn = f"{head}@127.0.0.1:{port}/{rest}"
    service = Service(ns, tmp_path / "pg.log", LOCKSTEP_PG_DSN=dsn)
    forwarder: Forwarder | None = None
    try:
        waiting = f"artifacts: Postgres at 127.0.0.1:{port}/"
        await service.until_logged(waiting, times=3)  # after 0.5 s and 1 s more: still up
        assert "not reachable (ConnectionRefusedError" in service.lines(waiting)[0]
        assert "; trying again in 0.5s" in service.lines(waiting)[0]
        assert service.proc.poll() is None
        assert not service.lines("Traceback")

        forwarder = Forwarder(port, port_of(host_port))  # Postgres is back
        await service.until_logged(
            f"artifacts: Postgres at 127.0.0.1:{port}/{rest.split('?')[0]} reachable"
        )
        await service.until_logged("artifacts: running (namespace")
        assert await service.sigterm() == 0
        assert service.lines("artifacts: stopped cleanly")
    finally:
        service.close()
        if forwarder is not None:
            forwarder.close()


async def test_a_service_started_before_kafka_waits_then_relays_and_consumes(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    async with service_pool(ARTIFACTS, ns.settings) as pool, pool.acquire() as conn:
        # Something left in the outbox from an earlier run: the relay's producer must start.
        # (On the DLQ: a topic the artifacts service may write, and that nothing consumes.)
        await write_and_wake(
            conn,
            [KafkaRecord(topic=ns.topic("dlq"), key=b"k", value=b"left over")],
            ns.settings.db_schema("artifacts"),
        )
    port = closed_port()
    service = Service(ns, tmp_path / "kafka.log", LOCKSTEP_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
    forwarder: Forwarder | None = None
    try:
        waiting = f"Kafka at 127.0.0.1:{port} not reachable (KafkaConnectionError); trying again"
        await service.until_logged(f"artifacts: {waiting}", times=2)
        await service.until_logged(f"-relay: {waiting}")
        assert service.proc.poll() is None
        assert not service.lines("Traceback")
        assert not service.lines("Unable connect to")  # aiokafka's own line: said once already

        forwarder = Forwarder(port, port_of(ns.settings.kafka_bootstrap))  # Kafka is back
        await service.until_logged(f"artifacts: Kafka at 127.0.0.1:{port} reachable")
        await ns.log.wait_for(
            lambda: any(r.value == b"left over" for r in ns.log.records), timeout=15
        )
        assert await service.sigterm() == 0
        assert service.lines("artifacts: stopped cleanly")
    finally:
        service.close()
        if forwarder is not None:
            forwarder.close()


async def test_sigterm_while_waiting_for_kafka_exits_0_at_once(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    port = closed_port()
    service = Service(ns, tmp_path / "stop.log", LOCKSTEP_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
    try:
        # tries at 0, 0.5, 1.5, 3.5 s: up and waiting for seconds
        await service.until_logged(f"artifacts: Kafka at 127.0.0.1:{port} not reachable", times=4)
        assert service.proc.poll() is None
        assert await service.sigterm() == 0
        assert service.lines("artifacts: stopped cleanly")
    finally:
        service.close()


async def test_a_deployer_started_before_kafka_waits_and_stops_with_0(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    port = closed_port()
    argv = ("deployer", "--agent", "early", "--env", "dev", "--state-dir", str(tmp_path / "st"))
    agent = Service(
        ns, tmp_path / "deployer.log", argv=argv, LOCKSTEP_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"
    )
    try:
        await agent.until_logged(f"deployer early: Kafka at 127.0.0.1:{port} not reachable", 3)
        assert agent.proc.poll() is None
        assert await agent.sigterm() == 0
    finally:
        agent.close()
