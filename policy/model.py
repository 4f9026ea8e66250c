"""What a release model may say, and the checks a schema alone cannot make.

Field checks (a time zone that exists, a recurrence rule that parses, a duration, a version
constraint) fail with the path of the field; ``cross_checks`` finds references to things
that are not declared (an environment, a service) and a cycle in the environment graph.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from string import Formatter
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator

from events._artifact_ref import NAME_PATTERN

NAME = NAME_PATTERN  # the contract's names: a service or environment named here is one there
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _duration(text: str) -> str:
    match = _DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30m, 2h, 1d12h")
    return text


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    assert match is not None
    d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin"
        ) from None
    return name


def _rrule(text: str) -> str:
    try:
        rrulestr(text, dtstart=datetime(2026, 1, 1))
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{text!r} is not an RFC 5545 recurrence rule ({exc}); "
            "e.g. FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=9"
        ) from None
    return text


def _constraint(text: str) -> str:
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        raise ValueError(
            f"{text!r} is not a version constraint; write e.g. >=2.3 or >=2.3,<3"
        ) from None
    return text


# A fixed window's start and end: from 2000 to 2099. A time outside is a typo (9999-12-21, a
# freeze that never ends; 0026 for 2026), not a plan; the range is the contract's event times
# (from 2000, events/_base.py) with room for any plan ahead.
FIRST_YEAR, LAST_YEAR = 2000, 2099


def _window_time(moment: datetime) -> datetime:
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(
            f"{moment.isoformat()} is outside the years {FIRST_YEAR}-{LAST_YEAR}; "
            "write the date in full, e.g. 2026-12-21T00:00:00"
        )
    return moment


WindowTime = Annotated[datetime, AfterValidator(_window_time)]
Duration = Annotated[str, AfterValidator(_duration)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
RRule = Annotated[str, AfterValidator(_rrule)]
Constraint = Annotated[str, AfterValidator(_constraint)]
Name = Annotated[str, Field(pattern=NAME)]
Severity = Literal["critical", "high", "medium", "low"]


class Strict(BaseModel):
    """A misspelt key is an error, not a silently ignored line; a number is finite (.inf and
    .nan are YAML floats, but no weight, score or limit, and JSON cannot carry them)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Environment(Strict):
    name: Name
    after: list[Name] = Field(default_factory=list, description="Environments a build passes first")
    region: str | None = None
    tenant: str | None = None


class Criterion(Strict):
    """One thing a gate checks. A ``key`` criterion that fails fails the gate outright."""

    evidence: Literal["tests", "security-scan", "benchmark"]
    key: bool = False
    weight: float = Field(default=1.0, gt=0)
    # security-scan: most findings allowed per severity (fail above), and warn above
    max_findings: dict[Severity, int] | None = None
    warn_findings: dict[Severity, int] | None = None
    # benchmark: a metric compared with the version in the environment now
    metric: str | None = None
    fail_regression_percent: float | None = Field(default=None, gt=0)
    warn_regression_percent: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fits_its_evidence(self) -> Criterion:
        scan = (self.max_findings, self.warn_findings)
        bench = (self.metric, self.fail_regression_percent, self.warn_regression_percent)
        if self.evidence == "security-scan" and self.max_findings is None:
            raise ValueError(
                "a security-scan criterion needs max_findings, e.g. {critical: 0, high: 0}"
            )
        if self.evidence != "security-scan" and any(v is not None for v in scan):
            raise ValueError(
                f"max_findings/warn_findings belong to security-scan, not {self.evidence}"
            )
        if self.evidence == "benchmark" and (
            self.metric is None or self.fail_regression_percent is None
        ):
            raise ValueError("a benchmark criterion needs metric and fail_regression_percent")
        if self.evidence != "benchmark" and any(v is not None for v in bench):
            raise ValueError(
                f"metric and *_regression_percent belong to benchmark, not {self.evidence}"
            )
        warn, fail = self.warn_regression_percent, self.fail_regression_percent
        if warn is not None and fail is not None and warn > fail:
            raise ValueError("warn_regression_percent must not exceed fail_regression_percent")
        return self


# A person, as people approve: the name their key carries (`lockstep keys create --role person
# --name alice`), e.g. alice or alice@example.com.
PERSON = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$"
Person = Annotated[str, Field(pattern=PERSON)]
OWNERS = "owners"  # in a gate's approvers: the members of the team that owns the service
TEAM_PREFIX = "team:"


def _approver(text: str) -> str:
    if text == OWNERS:
        return text
    if text.startswith(TEAM_PREFIX):
        if not re.match(NAME, text.removeprefix(TEAM_PREFIX)):
            raise ValueError(f"{text!r}: a team's name after 'team:', e.g. team:sre")
        return text
    if not re.match(PERSON, text):
        raise ValueError(
            f"{text!r} is not an approver; write a person (alice), team:<name> or owners"
        )
    return text


Approver = Annotated[str, AfterValidator(_approver)]


class Gate(Strict):
    criteria: list[Criterion] = Field(default_factory=list)
    soak: Duration | None = Field(default=None, description="Time in the previous environment")
    approvals: int = Field(
        default=0, ge=0, le=2, description="Manual approvals (a second is optional)"
    )
    approvers: list[Approver] = Field(
        default_factory=list,
        description="Who may approve or reject: people, team:<name> (its members), owners "
        "(the members of the service's owning team). Empty: any person with a key",
    )
    four_eyes: bool = Field(
        default=False, description="The change's author (as CI said) may not approve it"
    )
    pass_score: float = Field(default=90, ge=0, le=100)
    warn_score: float = Field(default=75, ge=0, le=100)

    @model_validator(mode="after")
    def _thresholds(self) -> Gate:
        if self.warn_score > self.pass_score:
            raise ValueError("warn_score must not exceed pass_score")
        if (self.approvers or self.four_eyes) and not self.approvals:
            raise ValueError("approvers and four_eyes need approvals (how many, 1 or 2)")
        return self


class Train(Strict):
    name: Name
    services: list[Name] = Field(min_length=1)
    environments: list[Name] = Field(min_length=1)
    cutoff: RRule | None = Field(default=None, description="When the train leaves (RFC 5545)")
    timezone: TimeZone = "UTC"


class Window(Strict):
    """An allow or deny window. A deny window wins over an allow window."""

    name: str = Field(min_length=1)
    kind: Literal["allow", "deny"]
    environments: list[Name] = Field(default_factory=list, description="Empty: every environment")
    regions: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    timezone: TimeZone
    rrule: RRule | None = None
    duration: Duration | None = None
    start: WindowTime | None = None
    end: WindowTime | None = None

    @model_validator(mode="after")
    def _recurring_or_fixed(self) -> Window:
        recurring = self.rrule is not None or self.duration is not None
        fixed = self.start is not None or self.end is not None
        if recurring == fixed:
            raise ValueError(
                "a window is either recurring (rrule and duration) or fixed (start and end)"
            )
        if recurring and (self.rrule is None or self.duration is None):
            raise ValueError("a recurring window needs both rrule and duration")
        if fixed and (self.start is None or self.end is None):
            raise ValueError("a fixed window needs both start and end")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class StopTheLine(Strict):
    active: bool = False
    reason: str = ""
    hotfixes: list[str] = Field(default_factory=list, description="service@version let through")


class Dependency(Strict):
    service: Name
    version: Constraint


class Owner(Strict):
    team: str = Field(min_length=1)
    escalation: list[str] = Field(default_factory=list)


class Team(Strict):
    members: list[Person] = Field(
        min_length=1, description="People, by the names they approve with"
    )


Comparison = Literal[">", ">=", "<", "<="]


class RollbackCriterion(Strict):
    """When a deployment hurts a health signal: "error_rate > 0.02 held for 5m within 30m of a
    deploy", or "p99_latency > 1.5 times the previous version's"."""

    name: Name
    metric: str = Field(min_length=1)
    comparison: Comparison = ">"
    threshold: float | None = Field(default=None, description="An absolute limit")
    relative_to_previous: float | None = Field(
        default=None, gt=0, description="A limit of this many times the previous version's value"
    )
    hold: Duration = Field(default="0s", description="How long the breach must last")
    tolerate: int = Field(
        default=0, ge=0, description="Failed checks tolerated: act on the next one (once held)"
    )
    within: Duration | None = Field(
        default="30m", description="How long after a deployment a breach rolls back (none: any)"
    )
    environments: list[Name] = Field(default_factory=list, description="Empty: every one")
    services: list[Name] = Field(default_factory=list, description="Empty: every service")
    rollback: bool = Field(default=True, description="False: an incident and its runbook only")
    kill_switches: list[str] = Field(
        default_factory=list, description="Flags to turn off in that environment"
    )
    runbook: Name | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> RollbackCriterion:
        if (self.threshold is None) == (self.relative_to_previous is None):
            raise ValueError(
                "a rollback criterion has either threshold (absolute) or relative_to_previous "
                "(e.g. 1.5 for 1.5 times the previous version's value)"
            )
        return self

    def applies_to(self, service: str, environment: str) -> bool:
        return (not self.services or service in self.services) and (
            not self.environments or environment in self.environments
        )


STEP_FIELDS = ("service", "environment", "version", "incident", "criterion")


def _template_fields(template: str) -> list[str]:
    """The {fields} a step's parameter names; ValueError if it is not a template."""
    try:
        return [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"{template!r} is not a template ({exc}); write {{{{ for a brace"
        ) from None


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with its {fields} from ``values``; it was checked when the model loaded."""
    return "".join(
        text + (values.get(name, "") if name is not None else "")
        for text, name, _, _ in Formatter().parse(template)
    )


class RunbookStep(Strict):
    """``notify`` (params.message), ``wait`` (params.duration), ``pause`` for a person
    (params.prompt), ``disable-flag`` / ``enable-flag`` (params.flag). Params may name
    {service}, {environment}, {version}, {incident} and {criterion}."""

    name: str = Field(min_length=1)
    action: Literal["notify", "wait", "pause", "disable-flag", "enable-flag"]
    params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params(self) -> RunbookStep:
        if self.action == "wait":
            _duration(self.params.get("duration", ""))
        if self.action in ("disable-flag", "enable-flag") and not self.params.get("flag"):
            raise ValueError(f"a {self.action} step needs params.flag")
        for name, template in self.params.items():
            unknown = [f for f in _template_fields(template) if f not in STEP_FIELDS]
            if unknown:
                raise ValueError(
                    f"params.{name} names {{{unknown[0]}}}; a step may name "
                    + ", ".join(f"{{{f}}}" for f in STEP_FIELDS)
                )
        return self


class Runbook(Strict):
    steps: list[RunbookStep] = Field(min_length=1)


class EscalationLevel(Strict):
    after: Duration = Field(description="After detection, if nobody has acknowledged")
    notify: list[str] = Field(
        min_length=1,
        description="`owner` (the service's team), `escalation` (its escalation list), or names",
    )


class Webhook(Strict):
    url: AnyHttpUrl
    format: Literal["json", "pagerduty"] = "json"
    routing_key: str | None = None

    @model_validator(mode="after")
    def _routing(self) -> Webhook:
        if self.format == "pagerduty" and not self.routing_key:
            raise ValueError("a pagerduty webhook needs routing_key (the integration key)")
        return self


class Escalation(Strict):
    levels: list[EscalationLevel] = Field(
        default_factory=lambda: [EscalationLevel(after="0s", notify=["owner"])]
    )
    webhooks: list[Webhook] = Field(default_factory=list)


class ReleaseModel(Strict):
    version: Literal[1] = Field(description="The file format's version")
    environments: list[Environment] = Field(min_length=1)
    gates: dict[Name, Gate] = Field(default_factory=dict)
    trains: list[Train] = Field(default_factory=list)
    windows: list[Window] = Field(default_factory=list)
    stop_the_line: StopTheLine = StopTheLine()
    dependencies: dict[Name, list[Dependency]] = Field(default_factory=dict)
    owners: dict[Name, Owner] = Field(default_factory=dict)
    teams: dict[Name, Team] = Field(default_factory=dict)
    rollback: list[RollbackCriterion] = Field(default_factory=list)
    runbooks: dict[Name, Runbook] = Field(default_factory=dict)
    escalation: Escalation = Escalation()


Path = tuple[str | int, ...]


def cross_checks(model: ReleaseModel) -> list[tuple[Path, str]]:
    """References to what is not declared, and cycles: (path, message) for each."""
    problems: list[tuple[Path, str]] = []
    names = [e.name for e in model.environments]
    known = set(names)
    seen: set[str] = set()
    for i, environment in enumerate(model.environments):
        if environment.name in seen:
            problems.append(
                (("environments", i, "name"), f"environment {environment.name!r} is declared twice")
            )
        seen.add(environment.name)
        for j, before in enumerate(environment.after):
            if before not in known:
                problems.append((("environments", i, "after", j), _unknown(before, names)))
    problems += _cycles(model)
    for env, gate in model.gates.items():
        if env not in known:
            problems.append((("gates", env), _unknown(env, names)))
        for j, approver in enumerate(gate.approvers):
            team = approver.removeprefix(TEAM_PREFIX)
            if approver.startswith(TEAM_PREFIX) and team not in model.teams:
                problems.append(
                    (
                        ("gates", env, "approvers", j),
                        f"no team {team!r}; declared: {', '.join(model.teams) or 'none'}",
                    )
                )
    trained: dict[tuple[str, str], str] = {}
    for i, train in enumerate(model.trains):
        for j, env in enumerate(train.environments):
            if env not in known:
                problems.append((("trains", i, "environments", j), _unknown(env, names)))
        for j, service in enumerate(train.services):
            for env in train.environments:
                other = trained.setdefault((service, env), train.name)
                if other != train.name:
                    problems.append(
                        (
                            ("trains", i, "services", j),
                            f"{service} already rides train {other} to {env}",
                        )
                    )
    for i, window in enumerate(model.windows):
        for j, env in enumerate(window.environments):
            if env not in known:
                problems.append((("windows", i, "environments", j), _unknown(env, names)))
    for service, deps in model.dependencies.items():
        for j, dep in enumerate(deps):
            if dep.service == service:
                problems.append(
                    (("dependencies", service, j, "service"), f"{service} cannot depend on itself")
                )
    for i, criterion in enumerate(model.rollback):
        for j, env in enumerate(criterion.environments):
            if env not in known:
                problems.append((("rollback", i, "environments", j), _unknown(env, names)))
        if criterion.runbook is not None and criterion.runbook not in model.runbooks:
            problems.append(
                (
                    ("rollback", i, "runbook"),
                    f"no runbook {criterion.runbook!r}; declared: "
                    + (", ".join(model.runbooks) or "none"),
                )
            )
    afters = [parse_duration(level.after) for level in model.escalation.levels]
    for i in range(1, len(afters)):
        if afters[i] <= afters[i - 1]:
            problems.append(
                (("escalation", "levels", i, "after"), "each level comes after the one before")
            )
    for j, label in enumerate(model.stop_the_line.hotfixes):
        if "@" not in label:
            problems.append((("stop_the_line", "hotfixes", j), f"{label!r} is not service@version"))
    return problems


def _unknown(name: str, names: list[str]) -> str:
    return f"unknown environment {name!r}; declared: {', '.join(names)}"


def _cycles(model: ReleaseModel) -> list[tuple[Path, str]]:
    after = {e.name: list(e.after) for e in model.environments}
    index = {e.name: i for i, e in enumerate(model.environments)}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == 2 or name not in after:
            return None
        if state.get(name) == 1:
            return [*trail[trail.index(name) :], name]
        state[name] = 1
        for before in after[name]:
            if (cycle := visit(before, [*trail, name])) is not None:
                return cycle
        state[name] = 2
        return None

    for name in after:
        if (cycle := visit(name, [])) is not None:
            first = cycle[0]
            return [
                (
                    ("environments", index[first], "after"),
                    "environments form a cycle: " + " -> ".join(reversed(cycle)),
                )
            ]
    return []
