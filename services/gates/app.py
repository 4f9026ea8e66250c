"""The gates service, assembled: its name, handlers and migrations."""

from policy import POLICY_MIGRATIONS
from services.gates.handlers import periodic, router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="gates",
    signs_as="gates",  # its decisions are signed with a gates key
    router=router,
    migrations=(POLICY_MIGRATIONS, MigrationSet("gates", "services.gates")),
    periodic=periodic,  # soak times running out
    period_s=5.0,
)
