"""Why a build may not go to an environment yet, free of I/O. Each hold says, in words a
person reads at 3 a.m., what holds it and, where it is known, until when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from policy.model import Environment, ReleaseModel, Train, Window, parse_duration


@dataclass(frozen=True)
class Hold:
    kind: str  # window | stop-the-line | previous-environment | dependency | train
    reason: str
    until: datetime | None = None  # when to look again (a window opening or closing)


def _env(model: ReleaseModel, name: str) -> Environment:
    return next(e for e in model.environments if e.name == name)


def _applies(window: Window, env: Environment) -> bool:
    return (
        (not window.environments or env.name in window.environments)
        and (not window.regions or (env.region or "") in window.regions)
        and (not window.tenants or (env.tenant or "") in window.tenants)
    )


def _span_at(window: Window, now: datetime) -> tuple[datetime, datetime] | None:
    """The occurrence of ``window`` that contains ``now``, if any."""
    zone = ZoneInfo(window.timezone)
    if window.start is not None and window.end is not None:
        start = window.start if window.start.tzinfo else window.start.replace(tzinfo=zone)
        end = window.end if window.end.tzinfo else window.end.replace(tzinfo=zone)
        return (start, end) if start <= now < end else None
    assert window.rrule is not None and window.duration is not None
    rule = rrulestr(window.rrule, dtstart=datetime(2000, 1, 1, tzinfo=zone))
    last = rule.before(now.astimezone(zone), inc=True)
    if last is None:
        return None
    end = last + parse_duration(window.duration)
    return (last, end) if now < end else None


def _next_start(window: Window, now: datetime) -> datetime | None:
    zone = ZoneInfo(window.timezone)
    if window.start is not None:
        start = window.start if window.start.tzinfo else window.start.replace(tzinfo=zone)
        return start if start > now else None
    assert window.rrule is not None
    rule = rrulestr(window.rrule, dtstart=datetime(2000, 1, 1, tzinfo=zone))
    found: datetime | None = rule.after(now.astimezone(zone))
    return found


def _local(moment: datetime, window: Window) -> str:
    return f"{moment.astimezone(ZoneInfo(window.timezone)):%Y-%m-%d %H:%M} {window.timezone}"


def window_hold(model: ReleaseModel, environment: str, now: datetime) -> Hold | None:
    """A deny window open now holds; so does being outside every allow window, if the
    environment has any. A deny window wins over an allow window."""
    env = _env(model, environment)
    windows = [w for w in model.windows if _applies(w, env)]
    for w in windows:
        if w.kind == "deny" and (span := _span_at(w, now)) is not None:
            return Hold(
                "window", f"{environment} frozen until {_local(span[1], w)} ({w.name})", span[1]
            )
    allows = [w for w in windows if w.kind == "allow"]
    if not allows or any(_span_at(w, now) is not None for w in allows):
        return None
    upcoming = [(start, w) for w in allows if (start := _next_start(w, now)) is not None]
    if not upcoming:
        return Hold("window", f"{environment} has no deployment window open now or later")
    start, w = min(upcoming, key=lambda pair: pair[0])
    return Hold(
        "window",
        f"{environment} is outside its deployment windows; "
        f"next opens {_local(start, w)} ({w.name})",
        start,
    )


def stop_the_line_hold(model: ReleaseModel, label: str) -> Hold | None:
    line = model.stop_the_line
    if not line.active or label in line.hotfixes:
        return None
    why = f": {line.reason}" if line.reason else ""
    return Hold("stop-the-line", f"the line is stopped{why} (only listed hotfixes move)")


def previous_environment_hold(
    model: ReleaseModel, environment: str, label: str, runs_in: set[str]
) -> Hold | None:
    """A build goes on from where it runs: every environment before this one must run it."""
    missing = [name for name in _env(model, environment).after if name not in runs_in]
    if not missing:
        return None
    return Hold("previous-environment", f"{label} does not run in {', '.join(missing)} yet")


def dependency_holds(
    model: ReleaseModel, service: str, environment: str, running: dict[str, str]
) -> list[Hold]:
    """``running``: service -> version in the environment now."""
    holds = []
    for dep in model.dependencies.get(service, []):
        has = running.get(dep.service)
        if has is not None and _satisfies(has, dep.version):
            continue
        found = f"has {has}" if has is not None else "has none"
        holds.append(
            Hold("dependency", f"needs {dep.service}{dep.version} in {environment}, {found}")
        )
    return holds


def _satisfies(version: str, constraint: str) -> bool:
    try:
        return Version(version) in SpecifierSet(constraint)
    except InvalidVersion:
        return False


def train_of(model: ReleaseModel, service: str, environment: str) -> Train | None:
    return next(
        (t for t in model.trains if service in t.services and environment in t.environments), None
    )


def train_departure_hold(
    train: Train, environment: str, ready_since: datetime, now: datetime
) -> Hold | None:
    """A train with a cut-off leaves at its first cut-off after every member was ready."""
    if train.cutoff is None:
        return None
    zone = ZoneInfo(train.timezone)
    rule = rrulestr(train.cutoff, dtstart=datetime(2000, 1, 1, tzinfo=zone))
    departure: datetime | None = rule.after(ready_since.astimezone(zone), inc=True)
    if departure is None:
        return Hold("train", f"train {train.name} to {environment} has no cut-off left")
    if now >= departure:
        return None
    when = f"{departure:%Y-%m-%d %H:%M} {train.timezone}"
    return Hold("train", f"train {train.name} to {environment} leaves {when} (cut-off)", departure)


def train_hold(train: Train, environment: str, ready: set[str]) -> Hold | None:
    """``ready``: members with a build cleared for the environment."""
    waiting = [s for s in train.services if s not in ready]
    if not waiting:
        return None
    return Hold("train", f"train {train.name} to {environment} waiting for {', '.join(waiting)}")
