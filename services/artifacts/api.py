"""The artifacts service's public face: what others (the command line, the demo, a console)
may read of the registry. Read-only: the registry changes only through events
(``artifact.packaged``, evidence), which the running service handles.

    async with open_artifacts(settings) as artifacts:
        rows = await artifacts.listed(service=None, limit=50)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from services.artifacts import queries
from services.artifacts.queries import ArtifactSummary, ArtifactView, Commit, EvidenceView
from shared.db import read_only_connection
from shared.settings import Settings

SERVICE = "artifacts"

__all__ = [
    "ArtifactSummary",
    "ArtifactView",
    "Artifacts",
    "Commit",
    "EvidenceView",
    "open_artifacts",
]


class Artifacts:
    """The registry's read models, on one connection to the service's own schema. Where the
    service has never run (no tables yet), nothing is registered."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def listed(self, service: str | None = None, limit: int = 50) -> list[ArtifactSummary]:
        """Registered builds, newest first, with how much evidence each has (and failing)."""
        try:
            return await queries.list_artifacts(self._conn, service, limit)
        except asyncpg.UndefinedTableError:
            return []

    async def show(self, service: str, version: str) -> ArtifactView | None:
        """One build: digest, commit, status, evidence, rejections (None: nothing known)."""
        try:
            return await queries.show_artifact(self._conn, service, version)
        except asyncpg.UndefinedTableError:
            return None

    async def commit_of(self, service: str, version: str) -> Commit | None:
        """The commit (and repository) a registered build came from."""
        try:
            return await queries.commit_of(self._conn, service, version)
        except asyncpg.UndefinedTableError:
            return None


@asynccontextmanager
async def open_artifacts(settings: Settings) -> AsyncIterator[Artifacts]:
    """The registry's read side. Applies no migrations: reading never shapes the schema."""
    async with read_only_connection(settings, SERVICE) as conn:
        yield Artifacts(conn)
