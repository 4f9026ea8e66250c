"""The release model in force in a service, as the last ``policy.updated`` delivered it.

Every service that acts on the model keeps it in a ``policy`` table of its own schema
(``sha256``, ``model``, ``updated_by``; ``policy/migrations``, in every such service's
``ServiceSpec.migrations`` as ``POLICY_MIGRATIONS``). A model is validated once per
process, by its hash: a decision reads only the hash unless the model is new to it.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from policy.model import ReleaseModel

_PARSED: dict[str, ReleaseModel] = {}


def model_in_force(sha256: str, raw: dict[str, Any]) -> ReleaseModel:
    """Validate (once) the model a ``policy.updated`` carried; raises if it does not parse."""
    if sha256 not in _PARSED:
        _PARSED[sha256] = ReleaseModel.model_validate(raw)
    return _PARSED[sha256]


async def keep(conn: asyncpg.Connection, sha256: str, raw: dict[str, Any], updated_by: str) -> None:
    """Put a model in force in the caller's schema (after checking that it parses)."""
    model_in_force(sha256, raw)
    await conn.execute(
        """INSERT INTO policy (only_one, sha256, model, updated_by) VALUES (true, $1, $2::jsonb, $3)
           ON CONFLICT (only_one) DO UPDATE
           SET sha256 = EXCLUDED.sha256, model = EXCLUDED.model,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        sha256, json.dumps(raw), updated_by,
    )  # fmt: skip


async def in_force(conn: asyncpg.Connection) -> tuple[str, ReleaseModel] | None:
    """(sha256, model) in force in the caller's schema, or None before the first one."""
    sha256: str | None = await conn.fetchval("SELECT sha256 FROM policy")
    if sha256 is None:
        return None
    if sha256 not in _PARSED:
        raw = await conn.fetchval("SELECT model FROM policy")
        model_in_force(sha256, json.loads(raw))
    return sha256, _PARSED[sha256]
