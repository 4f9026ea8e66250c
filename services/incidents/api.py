"""The incidents service's public face: what others (the command line, the demo, a console)
may read and do. Acknowledging, resolving, continuing or aborting a runbook and starting a
drill go through the same code as the service itself: one transaction of the service's,
with the release model in force, its events written to the service's outbox.

    async with open_incidents(settings, tracer=tracer) as incidents:
        await incidents.acknowledge("inc-0123456789ab", by="ann")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Tracer

from events.signing import KeyStore, KeyStoreError, NoSigningKey, SigningKey
from policy.in_force import in_force
from policy.model import ReleaseModel
from services.incidents import actions, runbooks, store
from services.incidents.actions import ActionRefused, NoSuchIncident, trace_id_of
from services.incidents.postmortem import Release
from services.incidents.postmortem import markdown as postmortem_markdown
from services.incidents.store import Drill, Incident, RunbookRun, TimelineRow
from shared.bus.direct import in_transaction
from shared.bus.handlers import HandlerContext
from shared.bus.signing import UnsignableDecision
from shared.service import service_pool
from shared.settings import Settings

SERVICE = "incidents"
T = TypeVar("T")

__all__ = [
    "ActionRefused",
    "Drill",
    "Incident",
    "Incidents",
    "NoSuchIncident",
    "Release",
    "RunbookRun",
    "TimelineRow",
    "open_incidents",
    "postmortem_markdown",
    "trace_id_of",
]


class Incidents:
    """The incidents service's read models and commands, on a small pool of its schema.
    Commands raise NoSuchIncident or ActionRefused when they cannot be done."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        tracer: Tracer,
        signing_key: SigningKey | None = None,
        no_key: str = "no incidents signing key",
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._tracer = tracer
        self._signing_key = signing_key  # signs the decisions a command makes (a drill's)
        self._no_key = no_key  # why there is none, said when a command needs one

    async def _act(
        self, span: str, work: Callable[[HandlerContext, ReleaseModel | None], Awaitable[T]]
    ) -> T:
        async def with_model(ctx: HandlerContext) -> T:
            found = await in_force(ctx.conn)
            return await work(ctx, found[1] if found else None)

        try:
            return await in_transaction(
                self._pool, self._settings, SERVICE, with_model, tracer=self._tracer, span=span,
                signing_key=self._signing_key,
            )  # fmt: skip
        except UnsignableDecision as exc:
            if self._signing_key is None:
                raise ActionRefused(self._no_key) from None
            raise ActionRefused(str(exc)) from None

    # --- commands --------------------------------------------------------------------------

    async def acknowledge(self, incident_id: str, by: str) -> Incident:
        """``by`` has it: escalation stops."""
        return await self._act(
            f"incidents: ack {incident_id}",
            lambda ctx, model: actions.acknowledge(ctx, model, incident_id, by),
        )

    async def resolve(self, incident_id: str, by: str, reason: str) -> Incident:
        """The incident is over; promotion of the service there may go on."""
        return await self._act(
            f"incidents: resolve {incident_id}",
            lambda ctx, model: actions.resolve(ctx, model, incident_id, by, reason),
        )

    async def continue_runbook(self, incident_id: str, by: str) -> RunbookRun:
        """Go on with a runbook paused for a person (the run as it was when paused)."""
        return await self._act(
            f"incidents: continue {incident_id}",
            lambda ctx, model: runbooks.resume(ctx, model, incident_id, by, True),
        )

    async def abort_runbook(self, incident_id: str, by: str) -> RunbookRun:
        """Stop a runbook paused for a person."""
        return await self._act(
            f"incidents: abort {incident_id}",
            lambda ctx, model: runbooks.resume(ctx, model, incident_id, by, False),
        )

    async def start_drill(self, service: str, environment: str, by: str) -> str:
        """Roll ``service`` back in ``environment`` on purpose, through the whole path
        (incident, rollback.requested, promotion, deployer, service.rolledback); the drill's
        incident id. A drill neither marks the version bad nor holds promotion."""

        async def start(ctx: HandlerContext, model: ReleaseModel | None) -> str:
            incident = await actions.start_drill(ctx, model, service, environment, by)
            return incident.id

        return await self._act(f"drill: roll back {service} in {environment}", start)

    async def wait_for_drill(self, incident_id: str, timeout_s: float) -> Drill | None:
        """The drill once its rollback is done; None if it was not within ``timeout_s``
        (the drill is then recorded as timed out)."""
        deadline = time.monotonic() + timeout_s
        async with self._pool.acquire() as conn:
            while time.monotonic() < deadline:
                found = await store.drill(conn, incident_id)
                if found is not None and found.finished_at is not None:
                    return found
                await asyncio.sleep(0.2)
            await store.time_out_drill(
                conn, incident_id, datetime.now(UTC),
                f"no service.rolledback within {timeout_s:g}s",
            )  # fmt: skip
        return None

    # --- read models -----------------------------------------------------------------------

    async def listed(self, include_resolved: bool = False) -> list[Incident]:
        """Incidents, newest first (open ones only unless ``include_resolved``)."""
        async with self._pool.acquire() as conn:
            return await store.listed(conn, include_resolved)

    async def get(self, incident_id: str) -> Incident | None:
        async with self._pool.acquire() as conn:
            return await store.get(conn, incident_id)

    async def timeline(self, incident_id: str) -> list[TimelineRow]:
        """What happened to the incident, oldest first."""
        async with self._pool.acquire() as conn:
            return await store.timeline(conn, incident_id)


@asynccontextmanager
async def open_incidents(
    settings: Settings, *, tracer: Tracer | None = None
) -> AsyncIterator[Incidents]:
    """The incidents service's schema, migrated first if the service has never run (its own
    migrations, as ``lockstep run incidents`` applies them). ``tracer``: whose spans the
    commands are (default: none kept)."""
    from services.incidents.app import SPEC  # the service's assembly names its migrations

    try:
        key: SigningKey | None = KeyStore(settings.key_dir).signing_key(SERVICE)
        no_key = ""
    except (NoSigningKey, KeyStoreError) as exc:
        key, no_key = None, f"the incidents service signs its decisions, and {exc}"
    async with service_pool(SPEC, settings, max_size=2) as pool:
        yield Incidents(
            pool, settings, tracer or trace.get_tracer("lockstep.incidents.api"), key, no_key
        )
