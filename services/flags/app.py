"""The flags service, assembled: handlers, migrations, the rollout clock, and its HTTP edge."""

from __future__ import annotations

from services.flags.changes import advance_rollouts
from services.flags.edge import FlagEdge
from services.flags.handlers import router
from shared.bus.handlers import HandlerContext
from shared.db import MigrationSet
from shared.service import Companion, RunningService, ServiceSpec
from shared.telemetry import tracer


async def _advance(ctx: HandlerContext) -> None:
    await advance_rollouts(ctx)


def _edge(service: RunningService) -> list[Companion]:
    assert service.pool is not None and service.provider is not None
    return [FlagEdge(service.pool, service.settings, tracer(service.provider), service.clock)]


SPEC = ServiceSpec(
    name="flags",
    router=router,
    migrations=(MigrationSet("flags", "services.flags"),),
    periodic=_advance,
    period_s=5.0,
    companions=_edge,
)
