"""The promotion service's public face: what runs where, from its ledger (the deployers'
reports), and the one command people give it, releasing a hold after a rollback. Promotion
changes only through events (gate decisions, deployments, ``hold.released``), which the
running service handles; the command is an event to publish.

    for p in await what_runs_where(settings):
        print(p.service, p.environment, p.version)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from events.promotions import HoldReleased, HoldReleasedContent, HoldReleasedSubject
from services.promotion import store
from shared.db import read_only_connection
from shared.settings import Settings

SERVICE = "promotion"

__all__ = ["HoldReleased", "Placement", "hold_released", "what_runs_where"]


@dataclass(frozen=True)
class Placement:
    """One service's version in one environment, as its deployer last reported."""

    environment: str
    service: str
    version: str
    digest: str
    deployed_at: datetime

    @property
    def label(self) -> str:
        return f"{self.service}@{self.version}"


async def what_runs_where(settings: Settings) -> list[Placement]:
    """Every (service, environment) the ledger knows, by service then environment (none
    where the service has never run). Applies no migrations: reading never shapes the
    schema."""
    async with read_only_connection(settings, SERVICE) as conn:
        try:
            rows = await store.matrix(conn)
        except asyncpg.UndefinedTableError:
            return []
    return [Placement(**dict(r)) for r in rows]


def hold_released(
    service: str,
    *,
    environment: str | None,
    version: str | None,
    by: str,
    reason: str,
    source: str = "lockstep/cli",
) -> HoldReleased:
    """The event that lifts a hold: the incident hold of ``service`` in ``environment``,
    and/or the mark on a ``version`` a rollback called bad. Publish it (``shared.bus``)."""
    return HoldReleased(
        context=HoldReleased.new_context(source),
        subject=HoldReleasedSubject(
            id=service,
            content=HoldReleasedContent(
                service=service, environment=environment, version=version, by=by, reason=reason
            ),
        ),
    )
