"""The incidents service, assembled: handlers, migrations, escalation and runbook clock, the
webhook edge and the webhook sender."""

from __future__ import annotations

from policy import POLICY_MIGRATIONS
from services.incidents.edge import create_app
from services.incidents.handlers import periodic, router
from services.incidents.notifier import Notifier
from shared.db import MigrationSet
from shared.http_edge import HttpServer
from shared.service import Companion, RunningService, ServiceSpec


def _companions(service: RunningService) -> list[Companion]:
    assert service.pool is not None
    settings = service.settings
    edge = HttpServer(
        create_app(service.pool, settings),
        host=settings.incidents_http_host,
        port=settings.incidents_http_port,
        name="incidents: webhooks",
    )
    return [edge, Notifier(service.pool)]


SPEC = ServiceSpec(
    name="incidents",
    signs_as="incidents",  # its decisions are signed with an incidents key
    router=router,
    migrations=(POLICY_MIGRATIONS, MigrationSet("incidents", "services.incidents")),
    periodic=periodic,
    period_s=2.0,
    companions=_companions,
)
