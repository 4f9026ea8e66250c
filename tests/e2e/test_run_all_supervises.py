"""`lockstep run all` as an operator runs it: every service a child process, a child that dies
(SIGKILL) started again, with a wait that doubles, and the restarted one doing its work; then
SIGTERM drains every child and the command exits 0 with no child left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from events import ArtifactPackaged, ArtifactPublished
from services.catalog import SERVICES
from tests.integration.conftest import NamespaceFactory, digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def children_of(parent: int) -> dict[str, int]:
    """The services the process ``parent`` runs as its children: name -> pid."""
    try:
        pids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except FileNotFoundError:
        return {}
    found = {}
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except FileNotFoundError:
            continue  # gone since
        if len(argv) >= 2 and argv[-2] == b"run":  # python -P -m cli run <name>
            found[argv[-1].decode()] = int(pid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def until(check: Callable[[], T | None], what: str, timeout: float = 90.0) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)
    return result


@pytest.mark.timeout(300)
async def test_run_all_restarts_a_killed_service_and_stops_every_one_on_sigterm(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
        "LOCKSTEP_FLAGS_HTTP_PORT": "0",  # no port of anyone else's
        "LOCKSTEP_INCIDENTS_HTTP_PORT": "0",
    }
    log_path = tmp_path / "run-all.log"
    with log_path.open("wb") as log_file:
        parent = subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", "run", "all"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
            start_new_session=True,  # its own group: nothing of it outlives the test
        )  # fmt: skip
    seen: set[int] = set()

    def log() -> str:
        return log_path.read_text(errors="replace")

    def every_service() -> dict[str, int] | None:
        running = children_of(parent.pid)
        return running if running.keys() == set(SERVICES) else None

    def artifacts_other_than(pid: int) -> Callable[[], int | None]:
        def check() -> int | None:
            now = children_of(parent.pid).get("artifacts")
            return now if now not in (None, pid) else None

        return check

    try:
        everyone = await until(every_service, f"a child for each of {sorted(SERVICES)}")
        seen.update(everyone.values())
        first = everyone["artifacts"]
        os.kill(first, signal.SIGKILL)
        second = await until(artifacts_other_than(first), "artifacts started again")
        seen.add(second)
        assert not alive(first)
        os.kill(second, signal.SIGKILL)  # dies at once again: the wait doubles
        third = await until(artifacts_other_than(second), "artifacts started a second time")
        seen.add(third)
        said = log()
        assert f"service artifacts (pid {first}) died after" in said
        assert "(killed by SIGKILL); restarting in 1 s" in said
        assert f"service artifacts (pid {second}) died after" in said
        assert "(killed by SIGKILL); restarting in 2 s" in said
        assert f"service artifacts restarted (pid {second}, restart 1)" in said
        assert f"service artifacts restarted (pid {third}, restart 2)" in said
        # the others were left running as they were
        others = {n: p for n, p in children_of(parent.pid).items() if n != "artifacts"}
        assert others == {n: p for n, p in everyone.items() if n != "artifacts"}

        # the restarted service works: a build packaged now is published
        name = f"restarted-{ns.settings.namespace[-6:]}"
        packaged = ArtifactPackaged.build(
            service=name, version="1.0.0", digest=digest(name), commit="c"
        )
        await ns.publish(packaged)

        def published() -> list[ArtifactPublished]:
            """the build published by the restarted artifacts service"""
            return [
                e for e in ns.log.events(ArtifactPublished)
                if isinstance(e, ArtifactPublished) and e.custom_data.service == name
            ]  # fmt: skip

        await ns.log.wait_for(published, 90)
        seen.update(children_of(parent.pid).values())

        parent.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(parent.wait, 90)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(30)
    assert code == 0, log()[-3000:]
    assert [pid for pid in seen if alive(pid)] == []  # every child gone, none left behind
