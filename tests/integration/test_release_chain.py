"""Build -> evidence -> gates -> promotion -> deployer, on the real Kafka and Postgres, with
the promotion service's clock moved by the test (no test sleeps for a window)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from events import (
    ApprovalUpdated,
    ArtifactPackaged,
    ArtifactRef,
    BenchmarkFinished,
    GateFailed,
    PromotionApproved,
    PromotionBlocked,
    SecurityScanFinished,
    ServiceDeployed,
    TestSuiteRunFinished,
)
from events.evidence import Findings, Measurement
from policy import load_text, policy_updated
from services.deployer import DeployerAgent
from services.deployer.reference import LocalStateDeployer
from services.gates.app import SPEC as GATES
from services.promotion.app import SPEC as PROMOTION
from shared.clock import ManualClock
from shared.service import RunningService
from tests.integration.conftest import Namespace, NamespaceFactory, digest, unique_service

pytestmark = pytest.mark.integration
BERLIN = ZoneInfo("Europe/Berlin")


def model(payments: str, checkout: str) -> bytes:
    return textwrap.dedent(f"""\
        version: 1
        environments:
          - name: dev
          - name: staging
            after: [dev]
          - name: prod-eu
            after: [staging]
        gates:
          staging:
            criteria:
              - evidence: tests
                key: true
          prod-eu:
            criteria:
              - evidence: tests
                key: true
              - evidence: security-scan
                key: true
                max_findings: {{critical: 0, high: 0}}
        windows:
          - name: holiday freeze
            kind: deny
            environments: [prod-eu]
            start: 2026-12-21T00:00:00
            end: 2027-01-04T09:00:00
            timezone: Europe/Berlin
        dependencies:
          {checkout}:
            - service: {payments}
              version: ">=2.3"
        """).encode()


async def ship(ns: Namespace, service: str, version: str) -> None:
    """What CI sends for one build: the build, its tests, its scan."""
    ref = ArtifactRef(service, version, digest(service + version))
    await ns.publish(
        ArtifactPackaged.build(
            service=service, version=version, digest=ref.digest or "", commit="c"
        )
    )
    await ns.publish(TestSuiteRunFinished.build(artifact=ref, suite="it", outcome="success"))
    await ns.publish(SecurityScanFinished.build(artifact=ref, scanner="trivy", findings=Findings()))


def approved(ns: Namespace, service: str) -> list[tuple[str, str]]:
    return [
        (e.subject.content.version, e.subject.content.environment)
        for e in ns.log.events(PromotionApproved)
        if isinstance(e, PromotionApproved) and e.subject.content.service == service
    ]


def deployed(ns: Namespace, service: str) -> list[tuple[str, str]]:
    found = []
    for e in ns.log.events(ServiceDeployed):
        assert isinstance(e, ServiceDeployed)
        ref = e.ref()
        if ref.service == service:
            found.append((ref.version, e.subject.content.environment.id))
    return found


def blocked(ns: Namespace, service: str, environment: str) -> list[list[str]]:
    return [
        [h.reason for h in e.subject.content.holds]
        for e in ns.log.events(PromotionBlocked)
        if isinstance(e, PromotionBlocked)
        and e.subject.content.service == service
        and e.subject.content.environment == environment
    ]


@asynccontextmanager
async def deployer(ns: Namespace, state: Path) -> AsyncIterator[LocalStateDeployer]:
    target = LocalStateDeployer(state)
    stop = asyncio.Event()
    agent = DeployerAgent(  # its journal beside the reference deployer's state, in tmp
        target,
        ns.settings,
        agent="ref",
        environments=["dev", "staging", "prod-eu"],
        state_dir=state,
    )
    task = asyncio.create_task(agent.run(stop))
    try:
        yield target
    finally:
        stop.set()
        await task


async def test_a_freeze_holds_production_and_the_newest_build_goes_when_it_lifts(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    payments, checkout = unique_service(), unique_service()
    clock = ManualClock(datetime(2026, 12, 22, 10, 0, tzinfo=BERLIN))  # inside the freeze
    promotion = RunningService(PROMOTION, ns.settings, clock=clock)
    await promotion.setup()
    promotion.start()
    try:
        async with ns.service(), ns.service(GATES), deployer(ns, tmp_path) as target:
            rules = load_text(model(payments, checkout))
            await ns.publish(policy_updated(rules, updated_by="platform"), signed_as="platform")
            await ship(ns, payments, "2.3.0")
            await ship(ns, checkout, "1.0.0")

            def both_held_at_production() -> bool:
                """both builds in staging, and held for prod-eu by what is left"""
                in_staging = ("2.3.0", "staging") in deployed(ns, payments) and (
                    "1.0.0",
                    "staging",
                ) in deployed(ns, checkout)
                told = [blocked(ns, s, "prod-eu") for s in (payments, checkout)]
                return in_staging and all(
                    t and not any("does not run in" in r for r in t[-1]) for t in told
                )

            await ns.log.wait_for(both_held_at_production, 60)
            assert set(deployed(ns, payments)) == {("2.3.0", "dev"), ("2.3.0", "staging")}
            # before it reached staging, that was a reason too; now only the freeze is
            assert blocked(ns, payments, "prod-eu")[0] == [
                "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)",
                f"{payments}@2.3.0 does not run in staging yet",
            ]
            assert blocked(ns, payments, "prod-eu")[-1] == [
                "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)"
            ]
            assert blocked(ns, checkout, "prod-eu")[-1] == [
                "prod-eu frozen until 2027-01-04 09:00 Europe/Berlin (holiday freeze)",
                f"needs {payments}>=2.3 in prod-eu, has none",
            ]

            await ship(ns, checkout, "1.0.1")  # a newer build arrives during the freeze

            def newer_in_staging() -> bool:
                """checkout 1.0.1 deployed to staging"""
                return ("1.0.1", "staging") in deployed(ns, checkout)

            await ns.log.wait_for(newer_in_staging, 60)

            clock.set(datetime(2027, 1, 4, 9, 30, tzinfo=BERLIN))  # the freeze is over
            await promotion.periodic.turn()  # type: ignore[union-attr]

            def in_production() -> bool:
                """both services deployed to prod-eu"""
                return ("1.0.1", "prod-eu") in deployed(ns, checkout) and (
                    "2.3.0",
                    "prod-eu",
                ) in deployed(ns, payments)

            await ns.log.wait_for(in_production, 60)
            await asyncio.sleep(0.5)  # room for a wrong, second promotion

            # only the newest build went, and only once; it went after what it depends on
            assert [a for a in approved(ns, checkout) if a[1] == "prod-eu"] == [
                ("1.0.1", "prod-eu")
            ]
            assert ("1.0.0", "prod-eu") not in deployed(ns, checkout)
            running = target.running("prod-eu", checkout)
            assert running is not None and running["version"] == "1.0.1"
            promotions = [
                e.subject.content for e in ns.log.events(PromotionApproved)
                if isinstance(e, PromotionApproved)
            ]  # fmt: skip
            [to_prod] = [
                p for p in promotions if (p.service, p.environment) == (checkout, "prod-eu")
            ]
            assert to_prod.policy_sha256 == rules.sha256
            [to_staging] = [
                p for p in promotions
                if (p.service, p.version, p.environment) == (checkout, "1.0.1", "staging")
            ]  # fmt: skip
            assert to_staging.previous_version == "1.0.0"
    finally:
        await promotion.stop()


TRAIN_MODEL = """\
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
      - evidence: security-scan
        key: true
        max_findings: {{critical: 0, high: 0}}
trains:
  - name: shop
    services: [{a}, {b}, {c}]
    environments: [staging]
"""


async def test_a_train_waits_for_its_failing_member_and_leaves_together_once_fixed(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    a, b, c = unique_service(), unique_service(), unique_service()
    async with (
        ns.service(),
        ns.service(GATES),
        ns.service(PROMOTION),
        deployer(ns, tmp_path),
    ):
        rules = load_text(TRAIN_MODEL.format(a=a, b=b, c=c).encode())
        await ns.publish(policy_updated(rules, updated_by="platform"), signed_as="platform")
        for service in (a, c):
            await ship(ns, service, "1.0.0")
        ref = ArtifactRef(b, "1.0.0", digest(b + "1.0.0"))
        await ns.publish(
            ArtifactPackaged.build(service=b, version="1.0.0", digest=ref.digest or "", commit="c")
        )
        await ns.publish(TestSuiteRunFinished.build(artifact=ref, suite="it", outcome="success"))
        await ns.publish(
            SecurityScanFinished.build(artifact=ref, scanner="trivy", findings=Findings(high=1))
        )

        def held_for_b() -> bool:
            """a and c held for staging, naming b's failed gate"""
            told = [blocked(ns, s, "staging") for s in (a, c)]
            return all(t and f"{b}@1.0.0 failed its gate" in t[-1][0] for t in told)

        await ns.log.wait_for(held_for_b, 60)
        assert blocked(ns, a, "staging")[-1] == [
            f"train shop to staging waiting for {b} ({b}@1.0.0 failed its gate)"
        ]
        assert not [x for s in (a, b, c) for x in approved(ns, s) if x[1] == "staging"]

        await ship(ns, b, "1.0.1")  # the fix

        def all_in_staging() -> bool:
            """the whole train deployed to staging"""
            return (
                {("1.0.0", "staging")} <= set(deployed(ns, a))
                and {("1.0.1", "staging")} <= set(deployed(ns, b))
                and {("1.0.0", "staging")} <= set(deployed(ns, c))
            )

        await ns.log.wait_for(all_in_staging, 60)

    to_staging = {
        (e.subject.content.service, e.subject.content.version, e.subject.content.train)
        for e in ns.log.events(PromotionApproved)
        if isinstance(e, PromotionApproved) and e.subject.content.environment == "staging"
    }
    assert to_staging == {(a, "1.0.0", "shop"), (b, "1.0.1", "shop"), (c, "1.0.0", "shop")}


GUARDED_MODEL = """\
version: 1
environments:
  - name: dev
  - name: staging
    after: [dev]
  - name: prod-eu
    after: [staging]
gates:
  staging:
    soak: 30m
  prod-eu:
    criteria:
      - evidence: tests
        key: true
      - evidence: benchmark
        key: true
        metric: p99
        fail_regression_percent: 10
    approvals: 1
"""


async def ship_with_benchmark(ns: Namespace, service: str, version: str, p99: float) -> None:
    ref = ArtifactRef(service, version, digest(service + version))
    await ns.publish(
        ArtifactPackaged.build(
            service=service, version=version, digest=ref.digest or "", commit="c"
        )
    )
    await ns.publish(TestSuiteRunFinished.build(artifact=ref, suite="it", outcome="success"))
    await ns.publish(
        BenchmarkFinished.build(
            artifact=ref, benchmark="load", metrics={"p99": Measurement(value=p99, unit="ms")}
        )
    )


async def test_soak_approval_and_a_benchmark_baseline_guard_production(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    service = unique_service()
    clock = ManualClock(datetime.now(UTC))
    gates = RunningService(GATES, ns.settings, clock=clock)
    await gates.setup()
    gates.start()
    try:
        async with ns.service(), ns.service(PROMOTION), deployer(ns, tmp_path):
            await ns.publish(
                policy_updated(load_text(GUARDED_MODEL.encode()), updated_by="platform"),
                signed_as="platform",
            )
            await ship_with_benchmark(ns, service, "1.0.0", p99=100)

            def in_dev() -> bool:
                """1.0.0 deployed to dev"""
                return ("1.0.0", "dev") in deployed(ns, service)

            await ns.log.wait_for(in_dev)
            await asyncio.sleep(0.5)
            assert ("1.0.0", "staging") not in approved(ns, service)  # soaking in dev

            clock.advance(timedelta(minutes=31))
            await gates.periodic.turn()  # type: ignore[union-attr]

            def in_staging() -> bool:
                """1.0.0 deployed to staging after its soak"""
                return ("1.0.0", "staging") in deployed(ns, service)

            await ns.log.wait_for(in_staging)
            await asyncio.sleep(0.5)
            assert ("1.0.0", "prod-eu") not in approved(ns, service)  # nobody approved yet

            await ns.publish(
                ApprovalUpdated.build(
                    service=service, version="1.0.0", environment="prod-eu", by="alice",
                    decision="approved",
                ),
                signed_as="person",
            )  # fmt: skip

            def in_production() -> bool:
                """1.0.0 deployed to prod-eu once approved"""
                return ("1.0.0", "prod-eu") in deployed(ns, service)

            await ns.log.wait_for(in_production)

            # a slower build: measured against 1.0.0, which runs in prod-eu now
            await ship_with_benchmark(ns, service, "1.0.1", p99=115)

            def regression_caught() -> list[GateFailed]:
                """the prod-eu gate of 1.0.1 failed"""
                wanted = (service, "1.0.1", "prod-eu")
                return [
                    e for e in ns.log.events(GateFailed)
                    if isinstance(e, GateFailed)
                    and (e.subject.content.service, e.subject.content.version) == wanted[:2]
                    and e.subject.content.environment == wanted[2]
                ]  # fmt: skip

            [failed] = await ns.log.wait_for(regression_caught)
    finally:
        await gates.stop()

    [bench] = [v for v in failed.subject.content.criteria if v.criterion == "benchmark p99"]
    assert bench.verdict == "fail"
    assert bench.measured == {"value": 115.0, "baseline": 100.0, "regression_percent": 15.0}
    assert bench.reason == "p99 115 vs 100: 15.0 % worse (fail above 10 %)"
    assert ("1.0.1", "prod-eu") not in approved(ns, service)


CUTOFF_MODEL = """\
version: 1
environments:
  - name: dev
trains:
  - name: weekly
    services: [{x}, {y}]
    environments: [dev]
    cutoff: FREQ=WEEKLY;BYDAY=TH;BYHOUR=12;BYMINUTE=0
    timezone: Europe/Berlin
"""


async def test_a_train_with_a_cut_off_leaves_at_its_cut_off(
    new_namespace: NamespaceFactory, tmp_path: Path
) -> None:
    ns = await new_namespace()
    x, y = unique_service(), unique_service()
    clock = ManualClock(datetime(2026, 12, 2, 9, 0, tzinfo=BERLIN))  # a Wednesday
    promotion = RunningService(PROMOTION, ns.settings, clock=clock)
    await promotion.setup()
    promotion.start()
    try:
        async with ns.service(), ns.service(GATES), deployer(ns, tmp_path):
            rules = load_text(CUTOFF_MODEL.format(x=x, y=y).encode())
            await ns.publish(policy_updated(rules, updated_by="platform"), signed_as="platform")
            for service in (x, y):
                await ship(ns, service, "1.0.0")

            def both_waiting_for_the_train() -> bool:
                """both told when the train leaves"""
                told = [blocked(ns, s, "dev") for s in (x, y)]
                return all(t and "(cut-off)" in t[-1][0] for t in told)

            await ns.log.wait_for(both_waiting_for_the_train)
            assert blocked(ns, x, "dev")[-1] == [
                "train weekly to dev leaves 2026-12-03 12:00 Europe/Berlin (cut-off)"
            ]
            assert approved(ns, x) == approved(ns, y) == []

            clock.set(datetime(2026, 12, 3, 12, 1, tzinfo=BERLIN))
            await promotion.periodic.turn()  # type: ignore[union-attr]

            def both_left() -> bool:
                """both deployed to dev"""
                return ("1.0.0", "dev") in deployed(ns, x) and ("1.0.0", "dev") in deployed(ns, y)

            await ns.log.wait_for(both_left)
    finally:
        await promotion.stop()
