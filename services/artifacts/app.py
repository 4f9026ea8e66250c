"""The artifacts service, assembled: its name, handlers and migrations."""

from services.artifacts.handlers import router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="artifacts",
    router=router,
    migrations=(MigrationSet("artifacts", "services.artifacts"),),
)
