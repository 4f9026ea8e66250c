"""A Kafka and a Postgres of the run's own, that the suite may kill without disturbing anyone:
other ports, temp dirs, removed at the end (``close``), whatever happened."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from harness import REPO

from shared.bus.kafka_client import kafka_admin
from shared.settings import Settings

INFRA = REPO / "infra" / "lockstep-infra"
SERVICE_ROLE_SQL = REPO / "infra" / "postgres" / "service-role.sql"
SHARED_LIBS = REPO / ".lockstep" / "kafka" / "libs"


def free_port(start: int, span: int = 1) -> int:
    """The first port from ``start`` on loopback with ``span`` free ports in a row."""
    port = start
    while port < 65000:
        if all(_free(port + i) for i in range(span)):
            return port
        port += span
    raise RuntimeError(f"no {span} free loopback ports from {start}")


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free to us
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class OwnKafka:
    """``infra/lockstep-infra up kafka [--brokers N]`` in a temp state dir on free ports."""

    def __init__(self, brokers: int, port: int) -> None:
        self.brokers = brokers
        self.port = port
        self.state = Path(tempfile.mkdtemp(prefix="lockstep-chaos-kafka-"))
        self.env = {
            **os.environ,
            "LOCKSTEP_STATE_DIR": str(self.state),
            "LOCKSTEP_KAFKA_PORT": str(port),
            "LOCKSTEP_KAFKA_CONTROLLER_PORT": str(port + 1),
            "LOCKSTEP_KAFKA_BROKERS": str(brokers),
        }
        if SHARED_LIBS.is_dir():  # the jars the default state dir has: no second download
            self.env["LOCKSTEP_KAFKA_LIBS_DIR"] = str(SHARED_LIBS)
        self.started = False

    @property
    def credentials_dir(self) -> Path:
        """Where its `up` keeps the SCRAM users' passwords (it is secured like any other)."""
        return self.state / "credentials"

    @property
    def bootstrap(self) -> str:
        if self.brokers == 1:
            return f"127.0.0.1:{self.port}"
        return ",".join(f"127.0.0.1:{self.port + 2 * i}" for i in range(self.brokers))

    async def _infra(self, *args: str, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(INFRA), *args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if check and proc.returncode != 0:
            raise RuntimeError(f"lockstep-infra {' '.join(args)} failed:\n{text[-3000:]}")
        return text

    async def up(self) -> None:
        self.started = True
        await self._infra("up", "kafka")

    async def pid(self, node: int = 1) -> int | None:
        out = (await self._infra("broker-pid", str(node), check=False)).strip()
        return int(out) if out.isdigit() else None

    async def kill(self, node: int = 1) -> int | None:
        """SIGKILL node ``node``; its pid (None: it was not running)."""
        pid = await self.pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        return pid

    async def restart_missing(self) -> None:
        """``up kafka`` again: starts the nodes that are not running."""
        await self._infra("up", "kafka")

    async def leader_of(self, topic: str, partition: int = 0) -> int:
        settings = Settings(kafka_bootstrap=self.bootstrap, credentials_dir=self.credentials_dir)
        admin = kafka_admin(settings, client_id="chaos-admin")
        await admin.start()
        try:
            for d in await admin.describe_topics([topic]):
                for p in d.get("partitions", []):
                    if p["partition"] == partition:
                        return int(p["leader"])
        finally:
            await admin.close()
        raise RuntimeError(f"no leader for {topic}[{partition}]")

    def log_tail(self, lines: int = 20) -> str:
        logs = sorted(self.state.glob("kafka/**/server.log"))
        out = []
        for log in logs:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(out)

    async def close(self) -> None:
        try:
            if self.started:
                await self._infra("down", "kafka", check=False)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)


class OwnPostgres:
    """A Postgres cluster of the run's own: initdb in a temp dir, run with pg_ctl as the
    ``postgres`` user on a free loopback port; ``stop_immediate`` is a crash. It has the
    administrator ``lockstep`` and each service's own role, as ``infra/lockstep-infra up``
    makes them (the same SQL), with their passwords in ``credentials_dir``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="lockstep-chaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.started = False
        self._as_root = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        return f"postgresql://lockstep:lockstep@127.0.0.1:{self.port}/lockstep?sslmode=disable"

    @property
    def credentials_dir(self) -> Path:
        """For ``LOCKSTEP_CREDENTIALS_DIR``: ``postgres.json``, the services' roles."""
        return self.dir / "credentials"

    def _run(self, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        cmd = (["runuser", "-u", "postgres", "--"] if self._as_root else []) + list(argv)
        done = subprocess.run(
            cmd, cwd="/", capture_output=True, text=True, timeout=120,
            **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def _bin(self, name: str) -> str:
        found = shutil.which(name)
        if found is None:
            versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
            if not versions:
                raise RuntimeError(f"{name} not found: install the PostgreSQL server package")
            found = str(versions[-1])
        return found

    async def up(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        await asyncio.to_thread(
            self._run, self._bin("initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8",
        )  # fmt: skip
        self.started = True
        await self.start()
        await asyncio.to_thread(
            self._run, self._bin("psql"), "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "-d", "postgres", "-c",
            "CREATE ROLE lockstep LOGIN CREATEDB PASSWORD 'lockstep'",
            "-c", "CREATE DATABASE lockstep OWNER lockstep",
        )  # fmt: skip
        await asyncio.to_thread(self._make_service_roles)

    def _make_service_roles(self) -> None:
        """A role per service of the mesh (``services.catalog``), as ``up`` makes them; each
        creates its own schema in the run's namespace at its first start."""
        from services.catalog import SERVICES

        found: dict[str, dict[str, str]] = {}
        for service in SERVICES:
            role, password = f"lockstep_svc_{service}", secrets.token_hex(24)
            given = f"\\set role {role}\n\\set pw {password}\n\\set admin lockstep\n"
            self._run(
                self._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", "postgres", "-d", "lockstep",
                stdin=given + SERVICE_ROLE_SQL.read_text(encoding="utf-8"),
            )  # fmt: skip
            found[service] = {"user": role, "password": password}
        self.credentials_dir.mkdir(mode=0o700)
        path = self.credentials_dir / "postgres.json"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(found, f)

    async def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=200"
        await asyncio.to_thread(
            self._run, self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", opts, "-w", "-t", "60", "start",
        )  # fmt: skip

    async def stop_immediate(self) -> None:
        await asyncio.to_thread(
            self._run, self._bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )

    async def close(self) -> None:
        try:
            if self.started and (self.data / "postmaster.pid").exists():
                await asyncio.to_thread(
                    self._run, self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                    "stop", check=False,
                )  # fmt: skip
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


async def netem_available() -> str | None:
    """None if ``tc netem`` works in a network namespace of our own; else why not."""
    name = f"lockstep-chaos-probe-{os.getpid()}"
    try:
        steps = [
            ["ip", "netns", "add", name],
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
             "delay", "20ms"],
        ]  # fmt: skip
        for argv in steps:
            if shutil.which(argv[0]) is None:
                return f"{argv[0]} is not installed"
            done = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=20
            )
            if done.returncode != 0:
                return f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}"
        return None
    finally:
        await asyncio.to_thread(
            subprocess.run, ["ip", "netns", "del", name], capture_output=True, timeout=20
        )
