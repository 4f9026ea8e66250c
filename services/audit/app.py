"""The audit service, assembled: its name, handlers and migrations."""

from services.audit.handlers import router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="audit",
    router=router,
    migrations=(MigrationSet("audit", "services.audit"),),
)
