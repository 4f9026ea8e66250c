"""The gates service, assembled: its name, handlers and migrations."""

from services.gates.handlers import router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(name="gates", router=router, migrations=MigrationSet("gates", "services.gates"))
