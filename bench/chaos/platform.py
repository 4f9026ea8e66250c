"""What people and tools do to the mesh while the chain runs under chaos, and what the topics
say of it afterwards:

- ``FlagChanges``: a platform team changing flags through the flags service's admin API (HTTP,
  an ``admin`` key made with ``lockstep flags keys create``), one change at a steady rate.
  The API has no idempotency key, so a change counts as expected only once a call for it was
  answered 2xx. Every change is a PUT of a whole definition, or an enable/disable: made again,
  it changes nothing (``{"changed": false}``, no event), so a call that failed (the service
  just killed, Postgres away, the answer lost) is simply made again, the same request, until it
  is answered or 120 s have passed (then the change is unacknowledged). On the ``flags`` topic:
  each acknowledged change's ``flag.changed`` exactly once (by its reason, unique per change).
- ``Breaches``: an observability tool reporting, for one in ``every`` releases, an error rate
  that breaches the chaos model's rollback criterion, once that release's ``service.deployed``
  is on the topic and the incidents service has taken it in (its group's committed offset is
  past the record: a signal judged before its deployment is known finds nothing to roll back).
  On the ``incidents`` topic: one ``incident.detected`` and one ``rollback.requested`` for each
  service whose signals Kafka acknowledged.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from harness import REPO

from chaos import count
from events import (
    FlagChanged,
    IncidentDetected,
    PromotionApproved,
    PromotionBlocked,
    RollbackRequested,
    ServiceDeployed,
    SignalObserved,
    topics,
)
from shared.bus import Publisher
from shared.bus.kafka_client import kafka_admin
from shared.settings import Settings

Say = Callable[[str], None]
ENVIRONMENT = "dev"
FLAG_KEYS = ("chaos-a", "chaos-b")
GIVE_UP_S = 120.0  # a call or a publish still failing after this long is unacknowledged
# The chaos model's rollback criterion (chaos.py MODEL): error_rate above 0.05 twice (tolerate
# 1), the two signals' own times 35 s apart (hold 30s), within 30m of the deployment.
BREACH = ((5, 0.5), (40, 0.6))  # (seconds after the deployment, error rate)


async def publish_retrying(pub: Publisher, events: list[Any], say: Say) -> bool:
    """Publish each event, each tried again (the same event: an inbox skips it if it did
    arrive) for up to GIVE_UP_S in all; False: given up."""
    deadline = time.monotonic() + GIVE_UP_S
    for event in events:
        while True:
            try:
                await pub.publish(event)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    say(f"giving up on {event.context.id}: {type(exc).__name__}: {exc}")
                    return False
                await asyncio.sleep(1.0)
    return True


@dataclass
class FlagCall:
    n: int
    flag: str
    action: str  # set, enable, disable
    reason: str
    attempts: int = 0
    status: int | None = None  # the last answer's
    changed: bool | None = None
    version: int | None = None
    event_id: str | None = None
    errors: list[str] = field(default_factory=list)  # why each failed attempt failed
    at_s: float = 0.0  # since the changes began
    took_s: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:  # a 3xx or 4xx: the same call again would not help
        return self.status is not None and 300 <= self.status < 500

    def brief(self) -> dict[str, Any]:
        return {
            "n": self.n, "flag": self.flag, "action": self.action, "attempts": self.attempts,
            "status": self.status, "changed": self.changed, "at_s": round(self.at_s, 1),
            "took_s": round(self.took_s, 1),
            "errors": self.errors[-3:],
        }  # fmt: skip


class FlagChanges:
    """Flag changes through the admin API of the flags process at ``port``."""

    def __init__(self, env: dict[str, str], port: int, tag: str, say: Say) -> None:
        self._env = env
        self._base = f"http://127.0.0.1:{port}/admin/v1/environments/{ENVIRONMENT}/flags"
        self._probe = f"http://127.0.0.1:{port}/ofrep/v1/configuration"
        self._tag = tag
        self._say = say
        self._key = ""
        self.calls: list[FlagCall] = []

    async def prepare(self) -> None:
        """Wait for the edge, then make an admin key as a platform team does (the CLI)."""
        import httpx

        deadline = time.monotonic() + GIVE_UP_S
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                try:
                    await client.get(self._probe)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the flags edge never answered") from None
                    await asyncio.sleep(0.5)
        argv = [sys.executable, "-P", "-m", "cli", "flags", "keys", "create", "--env", "*",
                "--name", f"chaos-platform-{self._tag}", "--role", "admin"]  # fmt: skip
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=REPO, env=self._env, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        lines = done.stdout.split()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"lockstep flags keys create failed: {done.stdout}{done.stderr}")
        self._key = lines[-1]

    def _next(self, n: int) -> tuple[str, str, dict[str, Any] | None]:
        """Change ``n``: (flag, action, definition). Per flag: create, disable, enable, set
        (the other default variant), disable, enable, ...: each differs from the state before."""
        flag = FLAG_KEYS[n % len(FLAG_KEYS)]
        m = n // len(FLAG_KEYS)
        if m % 3 == 0:
            definition = {
                "state": "ENABLED", "variants": {"on": True, "off": False},
                "defaultVariant": "on" if (m // 3) % 2 else "off",
                "metadata": {"type": "operational", "owner": "chaos"},
            }  # fmt: skip
            return flag, "set", definition
        return flag, ("disable" if m % 3 == 1 else "enable"), None

    async def run(self, interval_s: float, at_least: int, stop: asyncio.Event) -> None:
        """One change every ``interval_s`` (the next at once if one took longer) until
        ``stop`` is set and ``at_least`` have been made."""
        import httpx

        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            n = 0
            while not (stop.is_set() and n >= at_least):
                if (wait := t0 + n * interval_s - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                call = await self._one(client, n)
                call.at_s = time.monotonic() - t0 - call.took_s
                self.calls.append(call)
                n += 1

    async def _one(self, client: Any, n: int) -> FlagCall:
        import httpx

        flag, action, definition = self._next(n)
        call = FlagCall(n, flag, action, f"chaos change {n:04d} ({self._tag})")
        body: dict[str, Any] = {"reason": call.reason, "by": "chaos-platform"}
        if definition is not None:
            body["definition"] = definition
        method, url = ("PUT", f"{self._base}/{flag}") if action == "set" else (
            "POST", f"{self._base}/{flag}/{action}")  # fmt: skip
        t0 = time.monotonic()
        while True:
            call.attempts += 1
            try:
                r = await client.request(method, url, json=body, headers={"X-API-Key": self._key})
                call.status = r.status_code
                if r.status_code < 300:
                    answer = r.json()
                    call.changed = bool(answer.get("changed"))
                    call.version, call.event_id = answer.get("version"), answer.get("eventId")
                    break
                call.errors.append(f"{r.status_code}: {r.text[:200]}")
                if r.status_code < 500:
                    break  # refused: making it again would not help
            except (httpx.HTTPError, ValueError) as exc:  # no answer, or not JSON
                call.status = None
                call.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            if time.monotonic() - t0 > GIVE_UP_S:
                self._say(f"flags: giving up on change {n} after {call.attempts} attempts")
                break
            await asyncio.sleep(0.5)
        call.took_s = time.monotonic() - t0
        return call

    def tally(self, flag_records: list[tuple[Any, Any]]) -> count.Tally:
        reasons = {c.reason for c in self.calls}
        tally = count.Tally("flag.changed", {c.reason for c in self.calls if c.acknowledged})
        ids: set[str] = set()
        for _raw, event in flag_records:
            if isinstance(event, FlagChanged) and event.subject.content.reason in reasons:
                c = event.subject.content
                tally.note(c.reason, f"{event.subject.id} v{c.version}", event.context.id, ids)
        return tally

    def figures(self, tally: count.Tally) -> dict[str, Any]:
        acked = [c for c in self.calls if c.acknowledged]
        took = sorted(c.took_s for c in self.calls)
        return {
            "changes": len(self.calls),
            "acknowledged": len(acked),
            "unacknowledged": [
                c.brief() for c in self.calls if not c.acknowledged and not c.refused
            ],
            "refused": [c.brief() for c in self.calls if c.refused],
            "retried": len([c for c in self.calls if c.attempts > 1]),
            # made again after a failed call and answered "nothing to change": the failed
            # call had been applied (its answer lost)
            "applied_before_ack": [c.n for c in acked if c.attempts > 1 and not c.changed],
            "unchanged_at_first_call": [c.n for c in acked if c.attempts == 1 and not c.changed],
            "slowest_s": round(took[-1], 1) if took else None,
            "retried_examples": [c.brief() for c in self.calls if c.attempts > 1][:10],
            "flag_changed": tally.figures(),
        }


@dataclass
class Breach:
    service: str
    deployed_at: datetime | None = None
    where: tuple[int, int] | None = None  # (partition, offset) of its service.deployed
    seen_at: float | None = None  # monotonic: its service.deployed read
    signalled_s: float | None = None  # from seen to both signals acknowledged
    given_up: bool = False


class Breaches:
    """Breaching signals for one in ``every`` of the releases the chain sends."""

    def __init__(self, settings: Settings, every: int, say: Say) -> None:
        self._settings = settings
        self._every = every
        self._say = say
        self.wanted: dict[str, Breach] = {}
        self.sending_done = asyncio.Event()
        self._positions: dict[int, int] = {}

    def consider(self, i: int, service: str) -> None:
        """Release ``i`` (``service``) was acknowledged."""
        if self._every > 0 and i % self._every == self._every // 2:
            self.wanted[service] = Breach(service)

    @property
    def finished(self) -> bool:
        return self.sending_done.is_set() and all(
            b.signalled_s is not None or b.given_up for b in self.wanted.values()
        )

    @property
    def signalled(self) -> set[str]:
        return {s for s, b in self.wanted.items() if b.signalled_s is not None}

    async def run(self, stop: asyncio.Event) -> None:
        failing: str | None = None  # said once while it keeps failing the same way
        async with Publisher(self._settings, client_id="chaos-observability") as pub:
            while not (self.finished or stop.is_set()):
                try:
                    await self._turn(pub)
                    failing = None
                except Exception as exc:  # the broker moving: next turn
                    why = f"{type(exc).__name__}: {exc}"
                    if why != failing:
                        self._say(f"breaches: {why}; trying again each second")
                    failing = why
                with_timeout = asyncio.create_task(stop.wait())
                await asyncio.wait({with_timeout}, timeout=1.0)
                with_timeout.cancel()

    async def _turn(self, pub: Publisher) -> None:
        records = await count.read_all(self._settings, topics.DEPLOYMENTS, self._positions)
        for raw in records:
            at = max(self._positions.get(raw.partition, 0), raw.offset + 1)
            self._positions[raw.partition] = at
        for raw, event in count.decoded(records):
            if not isinstance(event, ServiceDeployed):
                continue
            b = self.wanted.get(event.ref().service)
            if b is not None and b.where is None:
                b.where, b.deployed_at = (raw.partition, raw.offset), event.context.timestamp
                b.seen_at = time.monotonic()
        pending = [b for b in self.wanted.values() if b.where and b.signalled_s is None]
        if not pending:
            return
        taken = await self._incidents_committed()
        for b in pending:
            assert b.where is not None and b.deployed_at is not None and b.seen_at is not None
            if taken.get(b.where[0], -1) <= b.where[1]:
                continue  # the incidents service has not taken the deployment in yet
            signals = [
                SignalObserved.build(
                    service=b.service, environment=ENVIRONMENT, metric="error_rate", value=v,
                    source="chaos/observability", window_seconds=30,
                    observed_at=b.deployed_at + timedelta(seconds=after),
                )
                for after, v in BREACH
            ]  # fmt: skip
            if await publish_retrying(pub, signals, self._say):
                b.signalled_s = time.monotonic() - b.seen_at
            else:
                b.given_up = True

    async def _incidents_committed(self) -> dict[int, int]:
        """The incidents group's committed offset per partition of the deployments topic."""
        s = self._settings
        admin = kafka_admin(s, client_id="chaos-obs")
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(s.group_id("incidents"))
        finally:
            await admin.close()
        topic = s.topic(topics.DEPLOYMENTS)
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if isinstance(tp, TopicPartition) and tp.topic == topic
        }

    def tallies(
        self, incident_records: list[tuple[Any, Any]], promotion_records: list[tuple[Any, Any]],
        scope: str,
    ) -> tuple[count.Tally, count.Tally, dict[str, int]]:  # fmt: skip
        """incident.detected and rollback.requested per breached service (``scope``: the
        prefix of the chain's services), and how promotion answered the rollbacks."""
        expected = self.signalled
        detected = count.Tally("incident.detected", expected)
        rollback = count.Tally("rollback.requested", expected)
        ids: set[str] = set()
        incidents: set[str] = set()
        for _raw, event in incident_records:
            if isinstance(event, IncidentDetected):
                svc = event.subject.content.service
                if svc is not None and svc.id.startswith(scope):
                    detected.note(svc.id, event.subject.id, event.context.id, ids)
                    incidents.add(event.subject.id)
            elif isinstance(event, RollbackRequested):
                c = event.subject.content
                if c.service.startswith(scope):
                    rollback.note(c.service, event.context.id, event.context.id, ids)
        answers = {"blocked: nothing to roll back to": 0, "approved: rollback": 0}
        for _raw, event in promotion_records:
            if isinstance(event, PromotionBlocked):
                held = event.subject.content.holds
                if any(h.kind == "rollback" and any(i in h.reason for i in incidents)
                       for h in held):  # fmt: skip
                    answers["blocked: nothing to roll back to"] += 1
            elif isinstance(event, PromotionApproved):
                approved = event.subject.content
                if approved.rollback and approved.service in expected:
                    answers["approved: rollback"] += 1
        return detected, rollback, answers

    def figures(
        self, detected: count.Tally, rollback: count.Tally, answers: dict[str, int]
    ) -> dict[str, Any]:
        waits = sorted(b.signalled_s for b in self.wanted.values() if b.signalled_s is not None)
        return {
            "services_to_breach": len(self.wanted),
            "breached": len(waits),
            "never_deployed": sorted(s for s, b in self.wanted.items() if b.where is None),
            "signals_given_up": sorted(s for s, b in self.wanted.items() if b.given_up),
            "deployed_to_signalled_s": {
                "median": round(statistics.median(waits), 1) if waits else None,
                "max": round(waits[-1], 1) if waits else None,
            },
            "incident_detected": detected.figures(),
            "rollback_requested": rollback.figures(),
            "promotion_answered_rollbacks": answers,
        }


class Platform:
    """The flag changes and the breaches of one chain, and their tallies for ``drain``."""

    def __init__(self, flags: FlagChanges, breaches: Breaches, settings: Settings,
                 scope: str) -> None:  # fmt: skip
        self.flags = flags
        self.breaches = breaches
        self._settings = settings
        self._scope = scope

    @property
    def ready(self) -> bool:
        return self.breaches.finished

    async def figures(self) -> tuple[dict[str, Any], dict[str, Any]]:
        read: Callable[[str], Awaitable[list[Any]]] = self._read
        flag_tally = self.flags.tally(await read(topics.FLAGS))
        detected, rollback, answers = self.breaches.tallies(
            await read(topics.INCIDENTS), await read(topics.PROMOTIONS), self._scope
        )
        return self.flags.figures(flag_tally), self.breaches.figures(detected, rollback, answers)

    async def _read(self, logical: str) -> list[Any]:
        return count.decoded(await count.read_all(self._settings, logical))

    @staticmethod
    def lost(flags: dict[str, Any], incidents: dict[str, Any]) -> int:
        return int(
            flags["flag_changed"]["lost"]
            + incidents["incident_detected"]["lost"]
            + incidents["rollback_requested"]["lost"]
        )
