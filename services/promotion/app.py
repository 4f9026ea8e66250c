"""The promotion service, assembled: handlers, a periodic look at held builds, migrations."""

from policy import POLICY_MIGRATIONS
from services.promotion.handlers import periodic, router
from shared.db import MigrationSet
from shared.service import ServiceSpec

SPEC = ServiceSpec(
    name="promotion",
    signs_as="promotion",  # its decisions are signed with a promotion key
    router=router,
    migrations=(POLICY_MIGRATIONS, MigrationSet("promotion", "services.promotion")),
    periodic=periodic,
    period_s=5.0,
)
