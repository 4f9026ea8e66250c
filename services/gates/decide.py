"""What the gates decide about one build, free of I/O: given everything known of the build
(a ``BuildSnapshot``), the release model in force and the time, which gate decisions are new
and when to look again. The handlers load the snapshot, call ``judge``, write what it decided
and emit it.

For each environment of the model, its gate (none: an empty gate, which passes) is evaluated
(``scoring.evaluate``) with:

- soak time: none for an environment that comes first; otherwise how long the build has run
  in the environments before it, counted from the latest of them, once it runs in all of them.
  While the soak is not over, the build is looked at again when it ends (``recheck_at``);
- the baseline of a benchmark: the metrics of the version running in the environment now,
  unless that is this build (or nothing runs there);
- approvals and rejections people gave the build for the environment, counted only from
  people the gate lets decide (``policy.people``: its approvers, four eyes); the others are
  named in the approval condition's reason.

A decision is new when it is decided (not pending) and differs, in its result or in the model
it cites, from the last one recorded for the build and environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from policy.model import Environment, Gate, ReleaseModel, parse_duration
from policy.people import approval_refusal
from services.gates.scoring import EvidenceFact, GateResult, evaluate


@dataclass(frozen=True)
class Build:
    service: str
    version: str
    digest: str
    purl: str
    author: str | None = None  # who made the change, as CI said

    @property
    def label(self) -> str:
        return f"{self.service}@{self.version}"


@dataclass(frozen=True)
class BuildSnapshot:
    """Everything a decision about ``build`` needs, read at once."""

    build: Build
    evidence: list[tuple[str, EvidenceFact]] = field(default_factory=list)  # (event id, fact)
    deployed: dict[str, datetime] = field(default_factory=dict)  # environment -> since when
    approvals: dict[str, dict[str, str]] = field(default_factory=dict)  # env -> who -> decision
    decisions: dict[str, tuple[str, str]] = field(default_factory=dict)  # env -> (result, sha)
    running: dict[str, str] = field(default_factory=dict)  # env -> version of the service there
    benchmarks: dict[str, list[EvidenceFact]] = field(default_factory=dict)  # running version ->


@dataclass(frozen=True)
class Decision:
    environment: str
    result: GateResult  # decided: pass, warning or fail, with a score

    @property
    def score(self) -> float:
        assert self.result.score is not None
        return self.result.score


@dataclass(frozen=True)
class Judgement:
    decisions: list[Decision]  # the new ones, in the model's order of environments
    recheck_at: datetime | None  # a soak ends then: judge the build again

    @property
    def outcome(self) -> str:
        return ", ".join(f"{d.environment} {d.result.result}" for d in self.decisions)


def judge(
    model: ReleaseModel, policy_sha256: str, snapshot: BuildSnapshot, now: datetime
) -> Judgement:
    """The new gate decisions about ``snapshot.build`` under ``model``, at ``now``."""
    facts = [fact for _, fact in snapshot.evidence]
    decisions: list[Decision] = []
    dues: list[datetime] = []
    for environment in model.environments:
        gate, soaked_for, due = soak(model.gates.get(environment.name, Gate()), environment,
                                     snapshot.deployed, now)  # fmt: skip
        if due is not None:
            dues.append(due)
        given, refused = {}, {}
        for who, said in snapshot.approvals.get(environment.name, {}).items():
            why = approval_refusal(
                model, environment.name, snapshot.build.service, who, snapshot.build.author
            )
            if why is None:
                given[who] = said
            else:
                refused[who] = why
        result = evaluate(
            gate,
            facts,
            baseline=(
                baseline(snapshot, environment.name)
                if any(c.evidence == "benchmark" for c in gate.criteria)
                else None
            ),
            soaked_for=soaked_for,
            approvals=sum(1 for d in given.values() if d == "approved"),
            rejected_by=sorted(who for who, d in given.items() if d == "rejected"),
            not_counted=[refused[who] for who in sorted(refused)],
        )
        if not result.decided:
            continue
        if snapshot.decisions.get(environment.name) == (result.result, policy_sha256):
            continue  # told already
        decisions.append(Decision(environment.name, result))
    return Judgement(decisions, min(dues) if dues else None)


def soak(
    gate: Gate, environment: Environment, deployed: dict[str, datetime], now: datetime
) -> tuple[Gate, timedelta | None, datetime | None]:
    """(the gate to evaluate, how long the build has soaked, when its soak ends if it has not
    yet). The first environment has nowhere to soak: its gate's soak does not apply. Soak time
    counts from the last of the environments before it to run the build, once all do."""
    if not environment.after:
        return gate.model_copy(update={"soak": None}), None, None
    if not all(e in deployed for e in environment.after):
        return gate, None, None
    since = max(deployed[e] for e in environment.after)
    soaked_for = max(now - since, timedelta(0))
    if gate.soak is not None and soaked_for < parse_duration(gate.soak):
        return gate, soaked_for, since + parse_duration(gate.soak)
    return gate, soaked_for, None


def baseline(snapshot: BuildSnapshot, environment: str) -> dict[str, float] | None:
    """The benchmark metrics of the version running in ``environment`` now (the last measure
    of each metric), if another version runs there and measured any."""
    running = snapshot.running.get(environment)
    if running is None or running == snapshot.build.version:
        return None
    metrics: dict[str, float] = {}
    for fact in snapshot.benchmarks.get(running, []):
        if fact.kind == "benchmark":
            for name, m in fact.details.get("metrics", {}).items():
                metrics[name] = float(m["value"])
    return metrics or None
