"""`lockstep deployer` killed (SIGKILL) mid-flow and started again, beside `lockstep run
promotion`: every promotion is reported as one event, and promotion's history holds one row
per promotion."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from events import ServiceDeployed
from services.deployer import report_id
from services.deployer.reference import LocalStateDeployer
from services.deployer.testing import DeployerHarness
from tests.integration.conftest import Namespace, NamespaceFactory, digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
COUNT = 20


def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def report_ids(ns: Namespace) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for e in ns.log.events(ServiceDeployed):
        assert isinstance(e, ServiceDeployed)
        found.setdefault(e.custom_data.promotion_id, set()).add(e.id)
    return found


async def test_a_deployer_killed_mid_flow_reports_each_promotion_once(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
    }
    promotions = [
        DeployerHarness.promotion(
            service=f"svc-{i:02d}-{ns.settings.namespace[-6:]}", version="1.0.0",
            digest=digest(f"{ns.settings.namespace}{i}"), environment="dev",
        )
        for i in range(COUNT)
    ]  # fmt: skip
    pids = {p.subject.content.promotion_id for p in promotions}
    state = tmp_path / "deployer"
    agent_args = ("deployer", "--agent", "e2e", "--env", "dev", "--state-dir", str(state))
    promotion = start(env, "run", "promotion")
    agent = start(env, *agent_args)
    try:
        for p in promotions:
            await ns.publish(p, signed_as="promotion")

        def some_reported() -> bool:
            """a few promotions reported"""
            return len(report_ids(ns)) >= 3

        await ns.log.wait_for(some_reported, 90)
        agent.kill()  # SIGKILL: wherever it is between deploy, report and commit
        agent.wait(10)
        agent = start(env, *agent_args)

        def all_reported() -> bool:
            """every promotion reported"""
            return set(report_ids(ns)) == pids

        await ns.log.wait_for(all_reported, 120)

        async def history() -> list[str]:
            try:
                rows = await ns.sql("promotion", "SELECT promotion_id FROM deployment_history")
            except Exception:  # the schema is not there yet
                return []
            return [r["promotion_id"] for r in rows]

        for _ in range(600):
            if set(await history()) >= pids:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("promotion never recorded every deployment")
        await asyncio.sleep(1.0)  # room for a report taken in twice
        kept = await history()
    finally:
        for process in (promotion, agent):
            process.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in (promotion, agent)]

    assert sorted(kept) == sorted(pids)  # one row per promotion
    found = report_ids(ns)
    assert all(found[pid] == {report_id(pid, "deployed")} for pid in pids), found
    target = LocalStateDeployer(state)
    for p in promotions:
        c = p.subject.content
        assert (target.running("dev", c.service) or {}).get("promotion_id") == c.promotion_id
    assert not ns.log.dead_letters()
    assert codes == [0, 0]
