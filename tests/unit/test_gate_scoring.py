"""Gate verdicts: each criterion judged with what it measured; key failures, scores, conditions."""

from __future__ import annotations

from datetime import timedelta

from policy.model import Criterion, Gate
from services.gates.scoring import EvidenceFact, evaluate

TESTS = Criterion(evidence="tests", key=True, weight=2)
SCAN = Criterion(
    evidence="security-scan", max_findings={"critical": 0, "high": 0}, warn_findings={"medium": 3}
)
BENCH = Criterion(
    evidence="benchmark", metric="p99", fail_regression_percent=10, warn_regression_percent=5
)


def suite_result(passed: bool, suite: str = "it") -> EvidenceFact:
    return EvidenceFact("tests", passed, {"suite": suite})


def scan(**findings: int) -> EvidenceFact:
    return EvidenceFact(
        "security-scan", not (findings.get("critical") or findings.get("high")), findings
    )


def bench(value: float, higher_is_better: bool = False) -> EvidenceFact:
    return EvidenceFact(
        "benchmark", True,
        {"metrics": {"p99": {"value": value, "unit": "ms", "higherIsBetter": higher_is_better}}},
    )  # fmt: skip


def test_all_good_passes_with_a_full_score() -> None:
    result = evaluate(
        Gate(criteria=[TESTS, SCAN, BENCH]),
        [suite_result(True), scan(), bench(100)],
        baseline={"p99": 100},
    )
    assert (result.result, result.score) == ("pass", 100.0)
    assert [j.verdict for j in result.criteria] == ["pass", "pass", "pass"]


def test_missing_evidence_keeps_the_gate_pending_and_says_what_is_missing() -> None:
    result = evaluate(Gate(criteria=[TESTS, SCAN]), [suite_result(True)])
    assert result.result == "pending" and result.score is None
    assert result.criteria[1].reason == "no security-scan evidence yet"


def test_a_failing_key_criterion_fails_the_gate_whatever_the_score() -> None:
    gate = Gate(criteria=[TESTS, SCAN, BENCH], pass_score=10, warn_score=5)
    result = evaluate(
        gate,
        [suite_result(True, "unit"), suite_result(False, "e2e"), scan(), bench(1)],
        baseline={"p99": 1},
    )
    assert result.result == "fail"
    assert result.criteria[0].reason == "failing: e2e"


def test_a_failing_key_criterion_does_not_wait_for_the_rest_or_for_approval() -> None:
    gate = Gate(criteria=[TESTS, SCAN], approvals=1)
    result = evaluate(gate, [suite_result(False)], approvals=0)
    assert result.result == "fail"
    assert [j.verdict for j in result.criteria] == ["fail", "pending"]


def test_scan_limits_fail_and_warn_with_the_counts() -> None:
    failed = evaluate(Gate(criteria=[SCAN]), [scan(high=1, medium=9)])
    assert failed.result == "fail"
    assert failed.criteria[0].reason == "too many findings: 1 high (max 0)"
    assert failed.criteria[0].measured == {"critical": 0, "high": 1, "medium": 9, "low": 0}
    warned = evaluate(Gate(criteria=[SCAN], pass_score=100, warn_score=50), [scan(medium=4)])
    assert warned.result == "warning" and warned.score == 50.0
    assert warned.criteria[0].reason == "4 medium (warn above 3)"


def test_a_benchmark_regression_beyond_the_threshold_fails_with_the_numbers() -> None:
    result = evaluate(Gate(criteria=[BENCH]), [bench(112)], baseline={"p99": 100})
    [judged] = result.criteria
    assert result.result == "fail"
    assert judged.measured == {"value": 112.0, "baseline": 100, "regression_percent": 12.0}
    assert judged.reason == "p99 112 vs 100: 12.0 % worse (fail above 10 %)"


def test_a_benchmark_respects_which_way_is_better() -> None:
    throughput = Criterion(evidence="benchmark", metric="p99", fail_regression_percent=10)
    worse = evaluate(
        Gate(criteria=[throughput]), [bench(850, higher_is_better=True)], baseline={"p99": 1000}
    )
    better = evaluate(
        Gate(criteria=[throughput]), [bench(1200, higher_is_better=True)], baseline={"p99": 1000}
    )
    assert (worse.result, better.result) == ("fail", "pass")


def test_a_small_regression_warns_and_the_score_decides() -> None:
    gate = Gate(criteria=[TESTS, BENCH], pass_score=90, warn_score=75)
    result = evaluate(gate, [suite_result(True), bench(107)], baseline={"p99": 100})
    assert result.criteria[1].verdict == "warning"
    assert result.score == round((2 * 1 + 1 * 0.5) / 3 * 100, 2)  # 83.33: below pass, above warn
    assert result.result == "warning"


def test_no_baseline_means_nothing_to_regress_from() -> None:
    result = evaluate(Gate(criteria=[BENCH]), [bench(500)], baseline=None)
    assert result.result == "pass"
    assert result.criteria[0].reason == "no baseline to compare with"


def test_soak_and_approvals_hold_the_gate_until_met() -> None:
    gate = Gate(criteria=[TESTS], soak="1h", approvals=2)
    waiting = evaluate(gate, [suite_result(True)], soaked_for=timedelta(minutes=20), approvals=1)
    assert waiting.result == "pending"
    assert [c.reason for c in waiting.conditions] == [
        "soaking: 0:20:00 of 1:00:00 in the previous environment",
        "1 of 2 approvals",
    ]
    done = evaluate(gate, [suite_result(True)], soaked_for=timedelta(hours=1), approvals=2)
    assert done.result == "pass"


def test_soak_before_the_build_runs_anywhere_says_so() -> None:
    result = evaluate(Gate(soak="30m"), [], soaked_for=None)
    assert (
        result.conditions[0].reason == "soak 0:30:00: not running in the previous environment yet"
    )


def test_a_gate_without_criteria_passes() -> None:
    assert evaluate(Gate(), []).result == "pass"


def test_a_rejection_fails_the_gate_and_names_who() -> None:
    gate = Gate(criteria=[TESTS], approvals=1)
    result = evaluate(gate, [suite_result(True)], approvals=1, rejected_by=["bob"])
    assert result.result == "fail"
    assert [(c.criterion, c.reason) for c in result.conditions] == [("approval", "rejected by bob")]
