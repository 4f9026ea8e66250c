"""What the gates decide about a build, from a snapshot of what is known of it and the time:
soak time and when to look again, baselines from the running version, approvals, and only
what is new is decided. No database: time and facts are passed in."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

from policy import load_text
from policy.model import ReleaseModel
from services.gates.decide import Build, BuildSnapshot, baseline, judge
from services.gates.scoring import EvidenceFact

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SHA = "a" * 64


def model(text: str) -> ReleaseModel:
    return load_text(textwrap.dedent(text).encode()).model


GUARDED = model("""\
    version: 1
    environments:
      - name: dev
      - name: staging
        after: [dev]
      - name: prod-eu
        after: [staging]
    gates:
      dev:
        soak: 1h
      staging:
        soak: 30m
        criteria:
          - evidence: tests
            key: true
      prod-eu:
        criteria:
          - evidence: tests
            key: true
          - evidence: benchmark
            key: true
            metric: p99
            fail_regression_percent: 10
        approvals: 1
    """)

BUILD = Build("checkout", "1.4.2", "sha256:" + "1" * 64, "pkg:oci/checkout@sha256:1")
TESTS_PASS = ("ev-1", EvidenceFact("tests", True, {"suite": "it"}))


def bench(p99: float) -> EvidenceFact:
    return EvidenceFact("benchmark", True, {"metrics": {"p99": {"value": p99, "unit": "ms"}}})


def snapshot(**known: object) -> BuildSnapshot:
    return BuildSnapshot(build=BUILD, **known)  # type: ignore[arg-type]


def results(snap: BuildSnapshot, at: datetime = T0, m: ReleaseModel = GUARDED) -> dict[str, str]:
    return {d.environment: d.result.result for d in judge(m, SHA, snap, at).decisions}


def test_the_first_environment_has_nowhere_to_soak_and_is_decided_at_once() -> None:
    judged = judge(GUARDED, SHA, snapshot(), T0)
    assert [(d.environment, d.result.result, d.score) for d in judged.decisions] == [
        ("dev", "pass", 100.0)
    ]
    assert judged.recheck_at is None
    assert judged.outcome == "dev pass"


def test_a_soak_not_over_yet_is_looked_at_again_when_it_ends() -> None:
    snap = snapshot(evidence=[TESTS_PASS], deployed={"dev": T0})
    judged = judge(GUARDED, SHA, snap, T0 + timedelta(minutes=10))
    assert "staging" not in {d.environment for d in judged.decisions}
    assert judged.recheck_at == T0 + timedelta(minutes=30)

    later = judge(GUARDED, SHA, snap, T0 + timedelta(minutes=30))
    [staging] = [d for d in later.decisions if d.environment == "staging"]
    assert staging.result.result == "pass"
    [soak] = staging.result.conditions
    assert (soak.criterion, soak.verdict, soak.measured) == ("soak", "pass", {"soaked_s": 1800.0})
    assert later.recheck_at is None


def test_a_soak_counts_from_when_the_build_reached_the_previous_environment() -> None:
    pending = judge(GUARDED, SHA, snapshot(evidence=[TESTS_PASS]), T0)
    assert "staging" not in {d.environment for d in pending.decisions}
    assert pending.recheck_at is None  # not deployed to dev: nothing to wait for yet
    snap = snapshot(evidence=[TESTS_PASS], deployed={"dev": T0 + timedelta(hours=1)})
    # a clock behind the deployment has soaked for nothing yet, not for a negative time
    judged = judge(GUARDED, SHA, snap, T0)
    assert "staging" not in {d.environment for d in judged.decisions}
    assert judged.recheck_at == T0 + timedelta(hours=1, minutes=30)


def test_a_soak_after_several_environments_counts_from_the_last_of_them() -> None:
    fan_in = model("""\
        version: 1
        environments:
          - name: eu
          - name: us
          - name: global
            after: [eu, us]
        gates:
          global:
            soak: 1h
        """)
    only_eu = snapshot(deployed={"eu": T0})
    assert judge(fan_in, SHA, only_eu, T0 + timedelta(hours=5)).recheck_at is None
    assert "global" not in results(only_eu, T0 + timedelta(hours=5), fan_in)
    both = snapshot(deployed={"eu": T0, "us": T0 + timedelta(minutes=40)})
    judged = judge(fan_in, SHA, both, T0 + timedelta(hours=1))
    assert judged.recheck_at == T0 + timedelta(hours=1, minutes=40)
    assert results(both, T0 + timedelta(hours=1, minutes=40), fan_in)["global"] == "pass"


def test_an_unchanged_decision_is_not_decided_again_but_a_new_model_is_cited() -> None:
    snap = snapshot(decisions={"dev": ("pass", SHA)})
    assert judge(GUARDED, SHA, snap, T0).decisions == []
    assert judge(GUARDED, SHA, snap, T0).outcome == ""
    assert [d.environment for d in judge(GUARDED, "b" * 64, snap, T0).decisions] == ["dev"]
    changed = snapshot(decisions={"dev": ("fail", SHA)})
    assert [d.environment for d in judge(GUARDED, SHA, changed, T0).decisions] == ["dev"]


def test_a_benchmark_is_measured_against_the_version_running_in_the_environment() -> None:
    snap = snapshot(
        evidence=[TESTS_PASS, ("ev-2", bench(115))],
        deployed={"dev": T0, "staging": T0},
        approvals={"prod-eu": {"alice": "approved"}},
        running={"prod-eu": "1.4.1", "staging": "1.4.2"},
        benchmarks={"1.4.1": [bench(120), bench(100)], "1.3.0": [bench(1)]},
    )
    assert baseline(snap, "prod-eu") == {"p99": 100.0}  # the last measure of it
    assert baseline(snap, "staging") is None  # this build runs there itself
    assert baseline(snap, "dev") is None  # nothing runs there
    [prod] = [d for d in judge(GUARDED, SHA, snap, T0).decisions if d.environment == "prod-eu"]
    assert prod.result.result == "fail"
    [p99] = [j for j in prod.result.criteria if j.criterion == "benchmark p99"]
    assert p99.measured == {"value": 115.0, "baseline": 100.0, "regression_percent": 15.0}


def test_without_a_running_version_there_is_no_baseline_to_regress_from() -> None:
    snap = snapshot(
        evidence=[TESTS_PASS, ("ev-2", bench(500))],
        deployed={"staging": T0},
        approvals={"prod-eu": {"alice": "approved"}},
    )
    [prod] = [d for d in judge(GUARDED, SHA, snap, T0).decisions if d.environment == "prod-eu"]
    assert prod.result.result == "pass"
    [p99] = [j for j in prod.result.criteria if j.criterion == "benchmark p99"]
    assert p99.reason == "no baseline to compare with"


def test_production_waits_for_an_approval_and_a_rejection_fails_it() -> None:
    ready = {
        "evidence": [TESTS_PASS, ("ev-2", bench(100))],
        "deployed": {"dev": T0, "staging": T0},
    }
    assert "prod-eu" not in results(snapshot(**ready))
    assert (
        results(snapshot(**ready, approvals={"prod-eu": {"bob": "approved"}}))["prod-eu"] == "pass"
    )
    # approvals count for their environment only
    assert "prod-eu" not in results(snapshot(**ready, approvals={"staging": {"bob": "approved"}}))
    rejected = snapshot(**ready, approvals={"prod-eu": {"bob": "approved", "eve": "rejected"}})
    [prod] = [d for d in judge(GUARDED, SHA, rejected, T0).decisions if d.environment == "prod-eu"]
    assert prod.result.result == "fail"
    assert [j.reason for j in prod.result.conditions if j.criterion == "approval"] == [
        "rejected by eve"
    ]


def test_decisions_come_in_the_order_of_the_environments() -> None:
    snap = snapshot(
        evidence=[TESTS_PASS, ("ev-2", bench(100))],
        deployed={"dev": T0, "staging": T0},
        approvals={"prod-eu": {"bob": "approved"}},
    )
    judged = judge(GUARDED, SHA, snap, T0 + timedelta(hours=2))
    assert [d.environment for d in judged.decisions] == ["dev", "staging", "prod-eu"]
    assert judged.outcome == "dev pass, staging pass, prod-eu pass"
