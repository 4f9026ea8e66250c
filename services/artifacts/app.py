"""The artifacts service, assembled: its name, handlers, migrations and periodic turn."""

from services.artifacts.handlers import periodic, router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="artifacts",
    router=router,
    migrations=(MigrationSet("artifacts", "services.artifacts"),),
    periodic=periodic,  # evidence that waited too long for its artifact expires
    period_s=60.0,
)
