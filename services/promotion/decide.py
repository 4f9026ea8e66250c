"""What promotion decides when it looks at a service and an environment, free of I/O: given
what is known there (a ``Snapshot``), the release model in force and the time, which builds
are superseded, which are held (and told why), which are approved. The handlers load the
snapshot, call ``look_at``, write what it decided and emit it.

- The newest waiting build (by version, then by arrival) is the one that may go; older
  waiting builds of the service are superseded.
- A build is held by its own holds (``own_holds``): the line stopped, a window, an
  environment before this one that does not run it, a rollback (an open incident on the
  service here, the version marked bad), a dependency not met by what runs here.
- A member of a train goes only with the train: when every member has a cleared build, at
  the train's first cut-off after they all were ready, in dependency order. A dependency on
  another member is met by the version riding along.
- A hold is told once, and again only when its reasons change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from packaging.version import InvalidVersion, Version

from policy.model import ReleaseModel, Train
from services.promotion import holds as rules
from services.promotion.holds import Hold


@dataclass(frozen=True)
class Candidate:
    """A build whose gate for an environment has been decided."""

    service: str
    version: str
    environment: str
    digest: str
    purl: str
    state: str  # waiting | approved | superseded | gate-failed
    holds: list[dict[str, Any]]  # what it was last told holds it
    created_at: datetime

    @property
    def label(self) -> str:
        return f"{self.service}@{self.version}"


@dataclass(frozen=True)
class Running:
    version: str
    digest: str
    deployed_at: datetime


@dataclass(frozen=True)
class IncidentHold:
    """Promotion of ``service`` to the environment holds until the incident is resolved."""

    service: str
    incident_id: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class BadVersion:
    """A version a rollback took out (of ``environment``); not promoted again until released."""

    service: str
    version: str
    environment: str
    incident_id: str
    reason: str
    marked_at: datetime


@dataclass(frozen=True)
class Snapshot:
    """What a look at some services (one, or a train's members) in ``environment`` needs."""

    environment: str
    waiting: dict[str, list[Candidate]] = field(default_factory=dict)  # service -> here
    gate_failed: dict[str, list[Candidate]] = field(default_factory=dict)  # service -> here
    running: dict[str, Running] = field(default_factory=dict)  # every service's, here
    runs_in: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (svc, ver) -> envs
    incident_holds: list[IncidentHold] = field(default_factory=list)  # on the services, here
    bad_versions: list[BadVersion] = field(default_factory=list)  # of the services
    # (service, version)s here approved or superseded: they stay so whatever gate decision
    # about them comes (loaded for the builds a batch's gate decisions are about)
    settled: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Tell:
    """``candidate`` is held by ``holds``."""

    candidate: Candidate
    holds: list[Hold]

    @property
    def views(self) -> list[dict[str, Any]]:
        """The holds as the candidate keeps them."""
        return [
            {"kind": h.kind, "reason": h.reason, "until": h.until.isoformat() if h.until else None}
            for h in self.holds
        ]

    @property
    def next_check(self) -> datetime | None:
        """When to look again (the first window to open or close)."""
        until = [h.until for h in self.holds if h.until is not None]
        return min(until) if until else None

    @property
    def news(self) -> bool:
        """The reasons differ from what the candidate was told last (tell it again)."""
        return [h.reason for h in self.holds] != [h.get("reason") for h in self.candidate.holds]


@dataclass(frozen=True)
class Approve:
    candidate: Candidate
    train: str | None
    previous: Running | None  # what runs in the environment now


@dataclass(frozen=True)
class Look:
    superseded: list[Candidate] = field(default_factory=list)
    held: list[Tell] = field(default_factory=list)
    approved: list[Approve] = field(default_factory=list)  # in the order to promote them


def weighs(model: ReleaseModel, service: str, environment: str) -> list[str] | None:
    """The services whose builds a look at ``service`` in ``environment`` weighs: it and the
    other members of its train there. None: the model has no such environment."""
    if environment not in {e.name for e in model.environments}:
        return None
    train = rules.train_of(model, service, environment)
    return list(train.services) if train is not None else [service]


def look_at(
    model: ReleaseModel, service: str, environment: str, snapshot: Snapshot, now: datetime
) -> Look:
    """Promote the newest waiting build of ``service`` to ``environment`` unless held."""
    waiting = newest_first(snapshot.waiting.get(service, []))
    if not waiting:
        return Look()
    newest, older = waiting[0], waiting[1:]
    train = rules.train_of(model, service, environment)
    if train is not None:
        look = _look_at_train(model, train, newest, snapshot, now)
        return Look(older, look.held, look.approved)
    held = own_holds(model, snapshot, newest, now)
    if held:
        return Look(older, held=[Tell(newest, held)])
    return Look(older, approved=[Approve(newest, None, snapshot.running.get(service))])


def look_at_each(
    model: ReleaseModel, services: list[str], environment: str, snapshot: Snapshot, now: datetime
) -> tuple[list[Look], Snapshot]:
    """``look_at`` each of ``services`` in ``environment``, in order, each look seeing what the
    ones before it decided (``settle``): what looking at them one at a time, writing each
    look's decisions before the next, decides. One ``Look`` per service, and the snapshot as
    it stands after them all."""
    looks = []
    for service in services:
        look = look_at(model, service, environment, snapshot, now)
        snapshot = settle(snapshot, look)
        looks.append(look)
    return looks, snapshot


def _key(c: Candidate) -> tuple[str, str, str]:
    return (c.service, c.version, c.environment)


def settle(snapshot: Snapshot, look: Look) -> Snapshot:
    """``snapshot`` as it stands once ``look``'s decisions are written: the builds superseded
    and approved wait no more (and stay so), and the builds told what holds them know it (so
    the same holds are not told twice)."""
    gone = {_key(c) for c in look.superseded} | {_key(a.candidate) for a in look.approved}
    told = {_key(t.candidate): t.views for t in look.held}
    if not gone and not told:
        return snapshot
    waiting = {
        service: [
            replace(c, holds=told.get(_key(c), c.holds)) for c in found if _key(c) not in gone
        ]
        for service, found in snapshot.waiting.items()
    }
    settled = snapshot.settled | {(service, version) for service, version, _ in gone}
    return replace(snapshot, waiting=waiting, settled=settled)


def arrive(snapshot: Snapshot, decided: Candidate) -> tuple[Snapshot, Candidate | None]:
    """A gate decision about a build arrived (``decided``: the build, ``waiting`` if it
    passed, ``gate-failed`` if not, as it would be stored anew): ``snapshot`` with the build in
    that state, and the candidate as it now stands; None (and ``snapshot`` as it was) for a
    build approved or superseded already, which stays so. A build known here keeps what it
    was (its arrival, its holds) but its state."""
    if (decided.service, decided.version) in snapshot.settled:
        return snapshot, None
    waiting = {s: [c for c in found if _key(c) != _key(decided)]
               for s, found in snapshot.waiting.items()}  # fmt: skip
    gate_failed = {s: [c for c in found if _key(c) != _key(decided)]
                   for s, found in snapshot.gate_failed.items()}  # fmt: skip
    known = [
        c for found in (snapshot.waiting, snapshot.gate_failed)
        for c in found.get(decided.service, []) if _key(c) == _key(decided)
    ]  # fmt: skip
    now = replace(known[0], state=decided.state) if known else decided
    (waiting if now.state == "waiting" else gate_failed).setdefault(now.service, []).append(now)
    return replace(snapshot, waiting=waiting, gate_failed=gate_failed), now


def _look_at_train(
    model: ReleaseModel, train: Train, newest: Candidate, snapshot: Snapshot, now: datetime
) -> Look:
    """A train leaves when every member is cleared. Members ride together: a dependency on
    another member is met by the version riding along (promotions come in dependency order)."""
    environment = newest.environment
    members: dict[str, Candidate | None] = {}
    for member in train.services:
        if member == newest.service:
            members[member] = newest
        else:
            found = newest_first(snapshot.waiting.get(member, []))
            members[member] = found[0] if found else None
    riding = {m: c.version for m, c in members.items() if c is not None}
    holds = {
        m: own_holds(model, snapshot, c, now, riding) for m, c in members.items() if c is not None
    }
    if holds[newest.service]:
        return Look(held=[Tell(newest, holds[newest.service])])
    missing = [
        _why_not_ready(snapshot, m, members[m], holds.get(m, []))
        for m in train.services
        if members[m] is None or holds.get(m)
    ]
    ready = {m for m in train.services if members[m] is not None and not holds.get(m)}
    train_hold = rules.train_hold(train, environment, ready)
    if train_hold is not None:
        held = [Hold("train", f"{train_hold.reason} ({'; '.join(missing)})")]
        return Look(  # every cleared member hears what the train waits for
            held=[Tell(c, held) for m, c in members.items() if c is not None and not holds.get(m)]
        )
    cleared = [c for c in members.values() if c is not None]
    ready_since = max(c.created_at for c in cleared)
    if (departure := rules.train_departure_hold(train, environment, ready_since, now)) is not None:
        return Look(held=[Tell(c, [departure]) for c in cleared])
    riders = [members[m] for m in dependency_order(model, train.services)]
    return Look(
        approved=[
            Approve(c, train.name, snapshot.running.get(c.service)) for c in riders if c is not None
        ]
    )


def own_holds(
    model: ReleaseModel,
    snapshot: Snapshot,
    c: Candidate,
    now: datetime,
    riding: dict[str, str] | None = None,
) -> list[Hold]:
    """What holds ``c`` itself, in this order: the line stopped, a window, an environment
    before this one that does not run it, what a rollback left (oldest first), dependencies.
    ``riding``: service -> version of the train members going along."""
    found: list[Hold] = []
    if (h := rules.stop_the_line_hold(model, c.label)) is not None:
        found.append(h)
    if (h := rules.window_hold(model, c.environment, now)) is not None:
        found.append(h)
    runs_in = snapshot.runs_in.get((c.service, c.version), set())
    if (h := rules.previous_environment_hold(model, c.environment, c.label, runs_in)) is not None:
        found.append(h)
    found += rollback_holds(snapshot, c)
    running = {s: r.version for s, r in snapshot.running.items()}
    found += rules.dependency_holds(model, c.service, c.environment, running | (riding or {}))
    return found


def rollback_holds(snapshot: Snapshot, c: Candidate) -> list[Hold]:
    """What a rollback left holding ``c``: an open incident on its service in the environment,
    its version marked bad; oldest first (an incident first when they came at once)."""
    found: list[tuple[datetime, str, Hold]] = [
        (i.since, "incident", Hold("incident", f"incident {i.incident_id}: {i.reason} "
                                               "(until it is resolved or released)"))
        for i in snapshot.incident_holds
        if i.service == c.service
    ]  # fmt: skip
    found += [
        (b.marked_at, "bad-version", Hold("bad-version", (
            f"{c.label} was rolled back in {b.environment} ({b.incident_id}: {b.reason}); "
            "release it to promote it again"
        )))
        for b in snapshot.bad_versions
        if (b.service, b.version) == (c.service, c.version)
    ]  # fmt: skip
    by_kind = sorted(found, key=lambda f: f[1], reverse=True)
    return [hold for _, _, hold in sorted(by_kind, key=lambda f: f[0])]


def _why_not_ready(
    snapshot: Snapshot, member: str, waiting: Candidate | None, holds: list[Hold]
) -> str:
    if waiting is not None:
        return f"{waiting.label}: {', '.join(h.reason for h in holds)}"
    failed = snapshot.gate_failed.get(member, [])
    if failed:
        return f"{newest_first(failed)[0].label} failed its gate"
    return f"{member}: no build has passed its gate"


def dependency_order(model: ReleaseModel, services: list[str]) -> list[str]:
    """``services`` with each one after the members it depends on (otherwise as listed)."""
    ordered: list[str] = []

    def place(service: str, seen: frozenset[str]) -> None:
        if service in ordered or service in seen:
            return
        for dep in model.dependencies.get(service, []):
            if dep.service in services:
                place(dep.service, seen | {service})
        ordered.append(service)

    for service in services:
        place(service, frozenset())
    return ordered


def newest_first(found: list[Candidate]) -> list[Candidate]:
    """By version (versions that do not parse after those that do), then by arrival."""

    def order(c: Candidate) -> tuple[Any, ...]:
        try:
            return (1, Version(c.version), c.created_at)
        except InvalidVersion:
            return (0, c.created_at)

    return sorted(found, key=order, reverse=True)
