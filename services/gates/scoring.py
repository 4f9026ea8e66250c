"""A gate's verdict, in the manner of Keptn's quality gates, free of I/O.

Each criterion of a gate is judged pass, warning or fail (or pending, while its evidence
has not arrived) with the values it measured. A key criterion that fails fails the gate.
It does so at once, without waiting for the rest of the evidence or for approvals.
Otherwise the weighted score (pass 1, warning 0.5, fail 0) out of 100 is held against the
gate's pass and warning thresholds. Soak time and approvals are conditions: while they are
not met, the gate is pending; a rejection fails it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from policy.model import Criterion, Gate, parse_duration

Verdict = Literal["pass", "warning", "fail", "pending"]
_VALUE = {"pass": 1.0, "warning": 0.5, "fail": 0.0}


@dataclass(frozen=True)
class EvidenceFact:
    """One piece of evidence attached to the build (as ``evidence.recorded`` says)."""

    kind: str  # tests | security-scan | benchmark
    passed: bool
    details: dict[str, Any]


@dataclass(frozen=True)
class Judged:
    criterion: str
    verdict: Verdict
    key: bool
    weight: float
    measured: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class GateResult:
    result: Verdict
    score: float | None  # None while any criterion is pending
    criteria: list[Judged]
    conditions: list[Judged]

    @property
    def decided(self) -> bool:
        return self.result != "pending"


def evaluate(
    gate: Gate,
    evidence: list[EvidenceFact],
    *,
    baseline: dict[str, float] | None = None,
    soaked_for: timedelta | None = None,
    approvals: int = 0,
    rejected_by: list[str] | None = None,
    not_counted: list[str] | None = None,
) -> GateResult:
    """``baseline``: benchmark metrics of the version in the environment now (None: nothing
    there yet). ``soaked_for``: how long the build has run in the previous environment.
    ``not_counted``: why each approval or rejection the gate does not count was left out."""
    judged = [_judge(c, evidence, baseline) for c in gate.criteria]
    conditions = _conditions(gate, soaked_for, approvals, rejected_by or [], not_counted or [])
    decided = [j for j in judged if j.verdict != "pending"]
    total = sum(j.weight for j in decided)
    score = (
        100.0
        if total == 0
        else round(sum(j.weight * _VALUE[j.verdict] for j in decided) / total * 100, 2)
    )
    if any(j.verdict == "fail" for j in conditions):  # a person said no
        return GateResult("fail", score, judged, conditions)
    if any(j.key and j.verdict == "fail" for j in judged):  # no need to wait for the rest
        return GateResult("fail", score, judged, conditions)
    if any(j.verdict == "pending" for j in judged + conditions):
        return GateResult("pending", None, judged, conditions)
    if score >= gate.pass_score:
        result: Verdict = "pass"
    elif score >= gate.warn_score:
        result = "warning"
    else:
        result = "fail"
    return GateResult(result, score, judged, conditions)


def _judge(c: Criterion, evidence: list[EvidenceFact], baseline: dict[str, float] | None) -> Judged:
    facts = [e for e in evidence if e.kind == c.evidence]
    name = c.evidence if c.evidence != "benchmark" else f"benchmark {c.metric}"
    if not facts:
        return Judged(name, "pending", c.key, c.weight, reason=f"no {c.evidence} evidence yet")
    if c.evidence == "tests":
        failing = [f.details.get("suite", "?") for f in facts if not f.passed]
        measured = {"suites": len(facts), "failing": failing}
        if failing:
            return Judged(name, "fail", c.key, c.weight, measured, f"failing: {', '.join(failing)}")
        return Judged(name, "pass", c.key, c.weight, measured)
    if c.evidence == "security-scan":
        return _judge_scan(c, facts, name)
    return _judge_benchmark(c, facts, baseline, name)


def _judge_scan(c: Criterion, facts: list[EvidenceFact], name: str) -> Judged:
    worst = {
        s: max(int(f.details.get(s, 0)) for f in facts)
        for s in ("critical", "high", "medium", "low")
    }
    over = [f"{worst[s]} {s} (max {n})" for s, n in (c.max_findings or {}).items() if worst[s] > n]
    if over:
        return Judged(name, "fail", c.key, c.weight, worst, "too many findings: " + ", ".join(over))
    warn = [
        f"{worst[s]} {s} (warn above {n})"
        for s, n in (c.warn_findings or {}).items()
        if worst[s] > n
    ]
    if warn:
        return Judged(name, "warning", c.key, c.weight, worst, ", ".join(warn))
    return Judged(name, "pass", c.key, c.weight, worst)


def _judge_benchmark(
    c: Criterion, facts: list[EvidenceFact], baseline: dict[str, float] | None, name: str
) -> Judged:
    assert c.metric is not None and c.fail_regression_percent is not None
    runs = [f.details.get("metrics", {}).get(c.metric) for f in facts]
    measurements = [m for m in runs if m is not None]
    if not measurements:
        return Judged(
            name, "pending", c.key, c.weight, reason=f"no benchmark measured {c.metric} yet"
        )
    latest = measurements[-1]
    value = float(latest["value"])
    higher_is_better = bool(latest.get("higherIsBetter", False))
    base = (baseline or {}).get(c.metric)
    if base is None or base == 0:
        return Judged(
            name, "pass", c.key, c.weight, {"value": value}, "no baseline to compare with"
        )
    worse_by = (base - value if higher_is_better else value - base) / abs(base) * 100
    measured = {"value": value, "baseline": base, "regression_percent": round(worse_by, 2)}
    if worse_by > c.fail_regression_percent:
        reason = (
            f"{c.metric} {value:g} vs {base:g}: {worse_by:.1f} % worse "
            f"(fail above {c.fail_regression_percent:g} %)"
        )
        return Judged(name, "fail", c.key, c.weight, measured, reason)
    if c.warn_regression_percent is not None and worse_by > c.warn_regression_percent:
        reason = f"{c.metric} {worse_by:.1f} % worse (warn above {c.warn_regression_percent:g} %)"
        return Judged(name, "warning", c.key, c.weight, measured, reason)
    return Judged(name, "pass", c.key, c.weight, measured)


def _conditions(
    gate: Gate,
    soaked_for: timedelta | None,
    approvals: int,
    rejected_by: list[str],
    not_counted: list[str],
) -> list[Judged]:
    conditions: list[Judged] = []
    if gate.soak is not None:
        needed = parse_duration(gate.soak)
        had = soaked_for or timedelta(0)
        verdict: Verdict = "pass" if had >= needed else "pending"
        if soaked_for is None:
            reason = f"soak {needed}: not running in the previous environment yet"
        elif verdict == "pending":
            reason = f"soaking: {had} of {needed} in the previous environment"
        else:
            reason = ""
        conditions.append(
            Judged("soak", verdict, True, 0, {"soaked_s": had.total_seconds()}, reason)
        )
    measured: dict[str, object] = {"approvals": approvals}
    if not_counted:
        measured["not_counted"] = list(not_counted)  # why each person's word was left out
    left_out = f"not counted: {'; '.join(not_counted)}" if not_counted else ""
    if rejected_by:
        said = f"rejected by {', '.join(rejected_by)}"
        conditions.append(Judged("approval", "fail", True, 0, measured, _both(said, left_out)))
    elif gate.approvals:
        verdict = "pass" if approvals >= gate.approvals else "pending"
        said = "" if verdict == "pass" else f"{approvals} of {gate.approvals} approvals"
        conditions.append(Judged("approval", verdict, True, 0, measured, _both(said, left_out)))
    return conditions


def _both(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
