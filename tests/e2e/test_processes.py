"""The chain with every part its own process: artifacts, gates, promotion and a deployer
agent, as `lockstep run …` and `lockstep deployer …` start them. The promotion service is
killed (SIGKILL) mid-flow and started again: no promotion is lost, none is made twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from events import (
    ArtifactPackaged,
    ArtifactRef,
    PromotionApproved,
    PromotionBlocked,
    ServiceDeployed,
    TestSuiteRunFinished,
)
from policy import load_text, policy_updated
from shared.bus import Publisher
from tests.integration.conftest import NamespaceFactory, digest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]

MODEL = b"""\
version: 1
environments:
  - name: dev
  - name: staging
    after: [dev]
gates:
  staging:
    criteria:
      - evidence: tests
        key: true
"""


def start(ns_env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=ns_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def test_a_promotion_service_killed_mid_flow_loses_and_doubles_nothing(
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
    services = [start(env, "run", name) for name in ("artifacts", "gates")]
    promotion = start(env, "run", "promotion")
    agent = start(env, "deployer", "--agent", "e2e", "--env", "dev", "--env", "staging",
                  "--state-dir", str(tmp_path))  # fmt: skip
    names = [f"e2e-{i:02d}-{ns.settings.namespace[-6:]}" for i in range(30)]
    try:
        await ns.publish(
            policy_updated(load_text(MODEL), updated_by="platform"), signed_as="platform"
        )
        async with Publisher(ns.settings) as ci:
            for name in names:
                ref = ArtifactRef(name, "1.0.0", digest(name))
                await ci.publish(
                    TestSuiteRunFinished.build(artifact=ref, suite="it", outcome="success")
                )
                await ci.publish(
                    ArtifactPackaged.build(
                        service=name, version="1.0.0", digest=ref.digest or "", commit="c"
                    )
                )

        def approvals() -> list[PromotionApproved]:
            return [e for e in ns.log.events(PromotionApproved) if isinstance(e, PromotionApproved)]

        def some_approved() -> bool:
            """a few promotions made"""
            return len(approvals()) >= 10

        await ns.log.wait_for(some_approved, 90)
        promotion.kill()  # SIGKILL: no drain, no goodbye
        promotion.wait(10)
        promotion = start(env, "run", "promotion")

        def all_in_staging() -> bool:
            """every build deployed to staging"""
            running = {
                (e.ref().service, e.subject.content.environment.id)
                for e in ns.log.events(ServiceDeployed)
                if isinstance(e, ServiceDeployed)
            }
            return all((n, "staging") in running for n in names)

        await ns.log.wait_for(all_in_staging, 120)
        await asyncio.sleep(1.0)  # room for a promotion made twice
    finally:
        for process in (*services, promotion, agent):
            process.terminate()
        codes = [p.wait(30) for p in (*services, promotion, agent)]

    made: dict[tuple[str, str], set[str]] = {}
    for e in approvals():
        c = e.subject.content
        made.setdefault((c.service, c.environment), set()).add(c.promotion_id)
    assert set(made) == {(n, e) for n in names for e in ("dev", "staging")}  # none lost
    assert all(len(ids) == 1 for ids in made.values()), made  # none made twice
    deployed = [e for e in ns.log.events(ServiceDeployed) if isinstance(e, ServiceDeployed)]
    assert len({e.custom_data.promotion_id for e in deployed}) == len(deployed) == 2 * len(names)
    assert codes == [0] * len(codes)  # every process stopped cleanly at the end


FREEZE_MODEL = """\
version: 1
environments:
  - name: dev
  - name: prod-eu
    after: [dev]
windows:
  - name: holiday freeze
    kind: deny
    environments: [prod-eu]
    start: 2026-12-21T00:00:00
    end: 2027-01-04T09:00:00
    timezone: Europe/Berlin
"""


async def test_a_freeze_holds_production_until_the_clock_passes_it(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    """The services as processes, their clock a file the test writes: nothing sleeps for a
    window, and the promotion service lets the build go once the freeze is over."""
    ns = await new_namespace()
    clock = tmp_path / "now"
    clock.write_text("2026-12-22T10:00:00+01:00")  # inside the freeze
    env = {
        **os.environ,
        "LOCKSTEP_NAMESPACE": ns.settings.namespace,
        "LOCKSTEP_KEY_DIR": str(ns.settings.key_dir),
        "LOCKSTEP_TRACE_DIR": str(ns.settings.trace_dir),
        "LOCKSTEP_LOG_LEVEL": "WARNING",
        "LOCKSTEP_CLOCK_FILE": str(clock),
        "LOCKSTEP_PERIODIC_S": "0.5",
    }
    processes = [start(env, "run", name) for name in ("artifacts", "gates", "promotion")]
    processes.append(
        start(
            env,
            "deployer",
            "--agent",
            "e2e",
            "--env",
            "dev",
            "--env",
            "prod-eu",
            "--state-dir",
            str(tmp_path / "deployed"),
        )
    )
    service = f"frozen-{ns.settings.namespace[-6:]}"
    try:
        await ns.publish(
            policy_updated(load_text(FREEZE_MODEL.encode()), updated_by="platform"),
            signed_as="platform",
        )
        async with Publisher(ns.settings) as ci:
            ref = ArtifactRef(service, "1.0.0", digest(service))
            await ci.publish(
                ArtifactPackaged.build(
                    service=service, version="1.0.0", digest=ref.digest or "", commit="c"
                )
            )

        def held() -> list[PromotionBlocked]:
            """the build in dev, held for prod-eu by the freeze alone"""
            return [
                e for e in ns.log.events(PromotionBlocked)
                if isinstance(e, PromotionBlocked) and e.subject.content.service == service
                and [h.kind for h in e.subject.content.holds] == ["window"]
            ]  # fmt: skip

        [blocked] = await ns.log.wait_for(held, 60)
        assert [h.reason for h in blocked.subject.content.holds] == [
            "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)"
        ]
        clock.write_text("2027-01-04T09:30:00+01:00")  # the freeze is over

        def in_production() -> bool:
            """the build deployed to prod-eu"""
            return any(
                isinstance(e, ServiceDeployed) and e.ref().service == service
                and e.subject.content.environment.id == "prod-eu"
                for e in ns.log.events(ServiceDeployed)
            )  # fmt: skip

        await ns.log.wait_for(in_production, 60)
    finally:
        for process in processes:
            process.terminate()
        codes = [p.wait(30) for p in processes]
    assert codes == [0] * len(codes)
