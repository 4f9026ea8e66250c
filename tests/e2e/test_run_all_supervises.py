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
from shared.bus.kafka_client import kafka_admin
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def children_of(parent: int) -> dict[str, int]:
    """The services the process ``parent`` runs as its children: name -> pid (the names of a
    child that runs several together joined by ", ")."""
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
        if b"run" in argv:  # python -P -m cli run <name>...
            names = argv[argv.index(b"run") + 1 :]
            found[", ".join(n.decode() for n in names)] = int(pid)
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


def run_all_env(ns: Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
        "LOCKSTEP_FLAGS_HTTP_PORT": "0",  # no port of anyone else's
        "LOCKSTEP_INCIDENTS_HTTP_PORT": "0",
    }


def start_supervisor(
    argv: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """`lockstep run …` as its own process group (nothing of it outlives the test), its
    stderr in ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "cli", *argv],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
            start_new_session=True,
        )  # fmt: skip


async def sigterm(parent: subprocess.Popen[bytes]) -> int:
    """SIGTERM, and the exit code once it has drained (within 90 s)."""
    parent.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(parent.wait, 90)


def kill_group_if_alive(parent: subprocess.Popen[bytes]) -> None:
    if parent.poll() is None:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(30)


async def a_build_is_published(ns: Namespace, label: str) -> None:
    """A build packaged now is published (by whichever artifacts service runs)."""
    name = f"{label}-{ns.settings.namespace[-6:]}"
    packaged = ArtifactPackaged.build(
        service=name, version="1.0.0", digest=digest(name), commit="c"
    )
    await ns.publish(packaged)

    def published() -> list[ArtifactPublished]:
        """the build published"""
        return [
            e for e in ns.log.events(ArtifactPublished)
            if isinstance(e, ArtifactPublished) and e.custom_data.service == name
        ]  # fmt: skip

    await ns.log.wait_for(published, 90)


@pytest.mark.timeout(300)
async def test_run_all_restarts_a_killed_service_and_stops_every_one_on_sigterm(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    env = run_all_env(ns)
    log_path = tmp_path / "run-all.log"
    parent = start_supervisor(["run", "all"], env, log_path)
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
        await a_build_is_published(ns, "restarted")
        seen.update(children_of(parent.pid).values())

        code = await sigterm(parent)
    finally:
        kill_group_if_alive(parent)
    assert code == 0, log()[-3000:]
    assert [pid for pid in seen if alive(pid)] == []  # every child gone, none left behind


@pytest.mark.timeout(300)
async def test_run_all_together_runs_every_service_in_one_process_as_its_own_group(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    """`run all --together`: one child runs every service on one event loop; each is still its
    own consumer group on Kafka; the child killed is started again, the whole of it; SIGTERM
    drains it and the command exits 0."""
    ns = await new_namespace()
    log_path = tmp_path / "run-all-together.log"
    parent = start_supervisor(["run", "all", "--together"], run_all_env(ns), log_path)
    together = ", ".join(SERVICES)

    def the_one_child() -> int | None:
        running = children_of(parent.pid)
        return running[together] if list(running) == [together] else None

    def another_child_than(pid: int) -> Callable[[], int | None]:
        def check() -> int | None:
            now = the_one_child()
            return now if now not in (None, pid) else None

        return check

    seen: set[int] = set()
    try:
        first = await until(the_one_child, f"one child running {together}")
        seen.add(first)
        await a_build_is_published(ns, "together")
        admin = kafka_admin(ns.settings)
        await admin.start()
        try:
            groups = {g[0] for g in await admin.list_consumer_groups()}
        finally:
            await admin.close()
        assert {ns.settings.group_id(name) for name in SERVICES} <= groups

        os.kill(first, signal.SIGKILL)
        second = await until(another_child_than(first), "the group started again")
        seen.add(second)
        said = log_path.read_text(errors="replace")
        assert f"services {together} (pid {first}) died after" in said
        assert f"services {together} restarted (pid {second}, restart 1)" in said
        await a_build_is_published(ns, "together-again")

        code = await sigterm(parent)
    finally:
        kill_group_if_alive(parent)
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    assert [pid for pid in seen if alive(pid)] == []
