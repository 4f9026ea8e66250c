"""The flags service as `lockstep run flags` runs it: OFREP served by the process, changes
made with the command line reaching clients and Kafka, a change made while the service was
down published once it is back, and SIGTERM a clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from events import FlagChanged
from services.flags import keys
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SWITCH = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "on",
    "metadata": {"type": "kill-switch", "owner": "payments"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "flags", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


async def until_serving(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(300):
            assert proc.poll() is None, "the flags service exited"
            try:
                if (await http.get("/ofrep/v1/configuration")).status_code in (401, 200):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the flags service never answered over HTTP")


async def reason_of(url: str, key: str, flag: str) -> str | None:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}) as http:
        r = await http.post(f"/environments/prod-eu/ofrep/v1/evaluate/flags/{flag}", json={})
        return r.json().get("reason") if r.status_code == 200 else None


async def test_the_flags_process_serves_relays_and_catches_up_after_downtime(
    new_namespace: NamespaceFactory,
) -> None:
    ns = await new_namespace()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
        "LOCKSTEP_FLAGS_HTTP_PORT": str(port),
        "LOCKSTEP_FLAGD_SCHEMA_DIR": str(REPO / ".lockstep" / "flagd-schemas"),
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "run", "flags"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    service = start()
    try:
        await until_serving(url, service)
        async with ns.connect("flags") as conn:
            key = await keys.create(conn, "prod-eu", "evaluate", "e2e", datetime.now(UTC))
        ns.signing_key("person", "sre")  # who changes the flag, with a key of their own
        await asyncio.to_thread(
            run_cli, env, "set", "pay-kill", "--env", "prod-eu", "--json", json.dumps(SWITCH),
            "--reason", "new switch", "--by", "sre",
        )  # fmt: skip
        assert await reason_of(url, key, "pay-kill") == "STATIC"
        await ns.log.wait_for(lambda: 1 in _versions(ns))

        # The service dies hard; a change is made while it is down.
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        await asyncio.to_thread(
            run_cli, env, "disable", "pay-kill", "--env", "prod-eu", "--reason", "outage",
            "--by", "sre",
        )  # fmt: skip
        await asyncio.sleep(1.0)
        assert 2 not in _versions(ns), "published with no service running?"

        service = start()
        await until_serving(url, service)
        await ns.log.wait_for(lambda: 2 in _versions(ns))
        assert _versions(ns).count(2) == 1
        for _ in range(50):
            if await reason_of(url, key, "pay-kill") == "DISABLED":
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the restarted service does not serve the change")
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=60)
    assert code == 0


def _versions(ns: Namespace) -> list[int]:
    return [
        e.subject.content.version
        for e in ns.log.events(FlagChanged)
        if isinstance(e, FlagChanged) and e.subject.id == "prod-eu/pay-kill"
    ]
