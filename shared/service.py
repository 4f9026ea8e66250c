"""A service's life: connect, migrate, consume and relay until told to stop, then drain.

``ServiceSpec`` is what a service declares (its name, handlers, migrations); ``RunningService``
assembles the real parts from settings. Postgres is reached as the service's own role
(``Settings.pg_dsn_for``), said at start-up, with a warning where there is none and the
service runs with the administrator's rights. SIGTERM or SIGINT: the consumer finishes the
batch in hand and commits, the relay publishes what is left in the outbox, spans are flushed,
and the process exits 0.

A service started while Postgres or Kafka is away waits for it (``shared.db.until_up``: one
line per try, the wait doubling to 5 s), however long that takes, and SIGTERM still ends it at
once with 0. What answers but refuses (a wrong password, a failing migration) ends it with
``NotComingUp``, which says who refused what.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from opentelemetry.sdk.trace import TracerProvider

from events.signing import SIGNERS, TRUST_FILE, trust_store_problem
from shared.bus.access import service_settings
from shared.bus.consumer import EventConsumer
from shared.bus.handlers import Router
from shared.bus.outbox import OutboxRelay
from shared.bus.periodic import Periodic, PeriodicRunner
from shared.bus.producer import ReliableProducer, new_kafka_producer
from shared.bus.signing import RotatingKey, service_key
from shared.bus.transport import KAFKA, Transport
from shared.clock import Clock, FileClock, system_clock
from shared.db import (
    BUS_MIGRATIONS,
    MigrationSet,
    NotComingUp,
    create_pool,
    migrate,
    pg_where,
    until_up,
)
from shared.pg_logins import DSN_VARIABLE, PG_CREDENTIALS_FILE, CredentialsUnreadable, PgLogin
from shared.settings import Settings
from shared.telemetry import tracer, tracer_provider

log = logging.getLogger(__name__)


class Companion(Protocol):
    """Something a service runs beside its consumer and relay (an HTTP edge), until ``stop``."""

    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    router: Router
    # The tables it owns or keeps (its own, and e.g. the release model's), applied in order.
    migrations: tuple[MigrationSet, ...] = ()
    periodic: Periodic | None = None  # work that time makes due, run every period_s
    period_s: float = 5.0
    # Built once the service is set up (its pool and settings ready), run while it runs.
    companions: Callable[[RunningService], list[Companion]] | None = None
    # The role whose key signs the decisions it emits (events.signing.SIGNERS); None: it
    # makes none. Its key is loaded at start-up from LOCKSTEP_KEY_DIR; none there: no start.
    signs_as: str | None = None


async def create_service_pool(
    spec: ServiceSpec, settings: Settings, *, max_size: int = 2
) -> tuple[asyncpg.Pool, list[str]]:
    """A pool on the service's own schema (``settings.db_schema(spec.name)``, created if
    missing), logged in as the service's own role (``settings.pg_dsn_for``), with its
    migrations applied, the bus's then its own, as ``lockstep run`` applies them; and the
    migration files applied now. Closed again if migrating fails. The caller
    closes it (``service_pool`` does)."""
    schema = settings.db_schema(spec.name)
    pool = await create_pool(settings.pg_dsn_for(spec.name), schema, max_size=max_size)
    try:
        applied = await migrate(pool, schema, [BUS_MIGRATIONS, *spec.migrations])
    except BaseException:
        await pool.close()
        raise
    return pool, applied


@asynccontextmanager
async def service_pool(
    spec: ServiceSpec, settings: Settings, *, max_size: int = 2
) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the service's own schema, migrated first if the service has never run
    (``create_service_pool``); closed on leaving. For a service's public face, which may be
    used before the service ever ran. Errors (Postgres unreachable, a migration failing) are
    the caller's to tell."""
    pool, _ = await create_service_pool(spec, settings, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


class RunningService:
    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        clock: Clock = system_clock,
        transport: Transport = KAFKA,
    ) -> None:
        self.spec = spec
        self.transport = transport  # the real broker, or the in-memory twin (tests)
        # Each service is its own Kafka principal (infra/access.toml), whoever starts it.
        self.settings = service_settings(settings, spec.name)
        self.clock = clock
        self.periodic: PeriodicRunner | None = None
        self._periodic_task: asyncio.Task[None] | None = None
        self._stop_periodic = asyncio.Event()
        self.schema = settings.db_schema(spec.name)
        self.stop_requested = asyncio.Event()  # what SIGTERM sets
        self._stop_consuming = asyncio.Event()
        self._stop_relaying = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.provider: TracerProvider | None = None
        self.consumer: EventConsumer | None = None
        self.relay: OutboxRelay | None = None
        self._producer: ReliableProducer | None = None
        self._consuming: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None
        self.companions: list[Companion] = []
        self._companion_tasks: list[asyncio.Task[None]] = []
        self._stop_companions = asyncio.Event()
        self.signing_key: RotatingKey | None = None
        self.killed = False  # abandoned by ``kill``, as a crash would leave it

    async def setup(self) -> None:
        """Connect and migrate; nothing consumed yet. Postgres away (or starting up) is waited
        for, until ``stop_requested``: then nothing is set up (``ready`` stays false). A
        service that signs and has no key, or that acts on decisions and has no trust store it can
        rely on (``trust_store_problem``), raises ``NotComingUp`` at once, saying what to do."""
        if self.spec.signs_as is not None:
            first = service_key(self.settings, self.spec.signs_as, self.spec.name)
            self.signing_key = RotatingKey(self.settings, self.spec.signs_as, self.spec.name, first)
        if any(t in SIGNERS for t in self.spec.router.event_types):
            problem = trust_store_problem(self.settings.key_dir / TRUST_FILE)
            if problem is not None:  # it would refuse, and lose, every decision it is sent
                raise NotComingUp(f"{self.spec.name}: it acts on signed decisions, and {problem}")
        login = self._pg_login()
        opened = await until_up(
            lambda: create_service_pool(
                self.spec, self.settings, max_size=self.settings.pg_pool_size
            ),
            stop=self.stop_requested,
            who=self.spec.name,
            what=f"Postgres at {pg_where(login.dsn.get_secret_value())}",
            logger=log,
        )
        if opened is None:
            return
        self.pool, applied = opened
        if applied:
            log.info("%s: applied migrations %s", self.spec.name, ", ".join(applied))
        self.provider = tracer_provider(self.settings, self.spec.name)
        self.consumer = EventConsumer(
            service=self.spec.name,
            router=self.spec.router,
            pool=self.pool,
            settings=self.settings,
            tracer=tracer(self.provider),
            schema=self.schema,
            clock=self.clock,
            signing_key=self.signing_key,
            transport=self.transport,
        )
        if self.spec.periodic is not None:
            self.periodic = PeriodicRunner(
                self.spec.periodic,
                service=self.spec.name,
                pool=self.pool,
                settings=self.settings,
                tracer=tracer(self.provider),
                clock=self.clock,
                every_s=self.settings.periodic_s or self.spec.period_s,
                signing_key=self.signing_key,
            )
        relay_id = f"{self.settings.group_id(self.spec.name)}-relay"
        self._producer = ReliableProducer(
            self.settings,
            client_id=relay_id,
            factory=lambda: new_kafka_producer(self.settings, relay_id, self.transport),
        )
        if self.spec.companions is not None:
            self.companions = self.spec.companions(self)
        self.relay = OutboxRelay(
            self.pool,
            self._producer,
            dsn=login.dsn.get_secret_value(),
            schema=self.schema,
            batch=self.settings.relay_batch,
            poll_s=self.settings.relay_poll_s,
            lease_s=self.settings.relay_lease_s,
        )

    def _pg_login(self) -> PgLogin:
        """The service's Postgres login, said at start-up: the role it logs in as and where
        that came from, or a warning that it runs with the administrator's rights."""
        name = self.spec.name
        try:
            login = self.settings.pg_login(name)
        except CredentialsUnreadable as exc:
            raise NotComingUp(f"{name}: Postgres login refused: {exc}") from exc
        if login.own_role:
            log.info(
                "%s: Postgres as %s (from %s)", name, login.user or "its own role", login.source
            )
        else:
            log.warning(
                "%s: no Postgres role of its own (neither %s%s nor an entry in %s): it runs "
                "with the administrator's rights (%s), and can read and write every service's "
                "schema; `infra/lockstep-infra up` makes the roles",
                name,
                DSN_VARIABLE,
                name.upper(),
                self.settings.credentials_dir / PG_CREDENTIALS_FILE,
                login.user or "LOCKSTEP_PG_DSN",
            )
        return login

    @property
    def ready(self) -> bool:
        """Set up (``setup`` did not end waiting for Postgres, told to stop)."""
        return self.consumer is not None and self.relay is not None

    def start(self, *, consume: bool = True, relay: bool = True) -> None:
        assert self.consumer is not None and self.relay is not None
        if consume and relay:  # what a batch emits goes straight to this process's relay
            self.consumer.handoff = self.relay
        if consume:
            self._consuming = asyncio.create_task(
                self.consumer.run(self._stop_consuming), name="consumer"
            )
        if relay:
            self._relaying = asyncio.create_task(self.relay.run(self._stop_relaying), name="relay")
        if consume and self.periodic is not None:
            self._periodic_task = asyncio.create_task(
                self.periodic.run(self._stop_periodic), name="periodic turn"
            )
        self._companion_tasks = [
            asyncio.create_task(c.run(self._stop_companions), name=c.name) for c in self.companions
        ]

    @property
    def _tasks(self) -> list[asyncio.Task[None]]:
        own = (self._consuming, self._periodic_task, self._relaying)
        return [t for t in own if t is not None] + self._companion_tasks

    async def stop(self) -> None:
        """Drain and close: in-flight batch committed, outbox published, spans flushed.
        Raises if a component had died: a service that lost its consumer or relay must not
        look as if it stopped cleanly."""
        self.stop_requested.set()
        # The consumer first: its last batch commits, and only then does the relay make its
        # final drain, so what that batch emitted leaves now rather than at the next start.
        crashed: list[tuple[str, BaseException]] = []
        self._stop_companions.set()  # the edges first: no new work arrives while draining
        for edge in self._companion_tasks:
            result = (await asyncio.gather(edge, return_exceptions=True))[0]
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                crashed.append((edge.get_name(), result))
        self._companion_tasks = []
        for event, task in (
            (self._stop_periodic, self._periodic_task),
            (self._stop_consuming, self._consuming),
            (self._stop_relaying, self._relaying),
        ):
            event.set()
            if task is None:
                continue
            result = (await asyncio.gather(task, return_exceptions=True))[0]
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                crashed.append((task.get_name(), result))
        self._consuming = self._relaying = self._periodic_task = None
        for name, result in crashed:
            log.error("%s: the %s ended with %r", self.spec.name, name, result)
        if self._producer is not None:
            await self._producer.stop()
        if self.provider is not None:
            self.provider.shutdown()
        if self.pool is not None:
            await self.pool.close()
        if crashed:
            name, error = crashed[0]
            if isinstance(error, NotComingUp):
                raise error  # it says who refused what
            raise RuntimeError(f"{self.spec.name}: the {name} crashed: {error!r}") from error

    async def kill(self) -> None:
        """Abandon the service as a crash would, for tests of what happens next: every task
        is cancelled where it stands, so an open Postgres transaction is rolled back, no
        offset is committed to Kafka and nothing more leaves the outbox; then its clients
        and connections are closed without draining (a consumer leaves its group as a dead
        process's would once the broker noticed). ``stop`` is not to be called after it."""
        self.killed = True
        self.stop_requested.set()
        tasks = self._tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._consuming = self._relaying = self._periodic_task = None
        self._companion_tasks = []
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self.provider is not None:
            self.provider.shutdown()
        if self.pool is not None:
            self.pool.terminate()

    async def wait(self) -> None:
        """Until stop is requested or a component ends (``stop`` then reports a crash)."""
        stopper = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()


async def serve(spec: ServiceSpec, settings: Settings) -> None:
    """Run one service until SIGTERM/SIGINT, then drain and return."""
    await serve_together([spec], settings)


async def serve_together(specs: Sequence[ServiceSpec], settings: Settings) -> None:
    """Run these services in this process, on one event loop, until SIGTERM/SIGINT, then
    drain each and return. Each is what it is in a process of its own (its consumer group,
    schema, principal, relay, spans); they share only the loop. One that ends by itself (a
    crash) stops the others, and ``stop`` raises its error: the process exits non-zero, and a
    supervisor (``lockstep run all --together``) starts the group again."""
    clock: Clock = FileClock(settings.clock_file) if settings.clock_file else system_clock
    services = [RunningService(spec, settings, clock=clock) for spec in specs]

    def stop_all() -> None:
        for service in services:
            service.stop_requested.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before setup: it may wait for Postgres
        loop.add_signal_handler(sig, stop_all)

    async def set_up(service: RunningService) -> None:
        try:
            await service.setup()
        except BaseException:
            stop_all()  # the others stop waiting (for Postgres, say): the process is refused
            raise

    outcomes = await asyncio.gather(*(set_up(s) for s in services), return_exceptions=True)
    refused = [r for r in outcomes if isinstance(r, BaseException)]
    if refused or any(s.stop_requested.is_set() for s in services):
        stop_all()
        await _stop_every(services)  # closes whatever each setup opened
        if refused:
            raise refused[0]
        log.info("%s: stopped before it was up", _names(services))
        return
    for service in services:
        service.start()
        log.info("%s: running (namespace %s)", service.spec.name, settings.namespace)
    waiting = [asyncio.create_task(s.wait()) for s in services]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    for task in waiting:
        task.cancel()
    stop_all()
    log.info("%s: stopping: draining in-flight work", _names(services))
    await _stop_every(services)
    handled = ", ".join(
        f"{s.spec.name} {s.consumer.handled}" for s in services if s.consumer is not None
    )
    log.info("%s: stopped cleanly (events handled: %s)", _names(services), handled)


def _names(services: Sequence[RunningService]) -> str:
    return ", ".join(s.spec.name for s in services)


async def _stop_every(services: Sequence[RunningService]) -> None:
    """Stop them all (each drains on its own), then raise the first one's error, if any."""
    stopped = await asyncio.gather(*(s.stop() for s in services), return_exceptions=True)
    for outcome in stopped:
        if isinstance(outcome, BaseException):
            raise outcome
