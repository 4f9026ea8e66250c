"""The release model in force in a service, as the last ``policy.updated`` delivered it.

Every service that acts on the model keeps it in a ``policy`` table of its own schema
(``sha256``, ``model``, ``updated_by``; ``policy/migrations``, in every such service's
``ServiceSpec.migrations`` as ``POLICY_MIGRATIONS``). A model is validated once per
process, by its hash: a decision reads only the hash unless the model is new to it.

A decision and a change of model are serialised, so none is lost between them. A transaction
that reads the model in force holds it (a shared advisory lock on the schema's model, until
commit); one that puts a new model in force takes it alone, so it waits for the decisions
under way to commit, and then sees what they recorded (the builds a gate judged under the old
model, or under none, are judged again), while a decision that begins after it waits, and
reads the new model. Without this, a build registered in the same moment as the first model
arrived was judged under no model by one transaction and missed by the other's re-judging,
and never judged at all. Services that lock their own subjects (a build, an environment) take
the model first, in the same statement (``HOLD_MODEL``), so the locks are always taken in
one order.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from policy.model import ReleaseModel

_PARSED: dict[str, ReleaseModel] = {}

_MODEL_KEY = "hashtextextended(current_schema() || ':policy', 0)"
# SQL: hold the model in force until commit (shared with every other decision).
HOLD_MODEL = f"pg_advisory_xact_lock_shared({_MODEL_KEY})"
_CHANGE_MODEL = f"SELECT pg_advisory_xact_lock({_MODEL_KEY})"


def model_in_force(sha256: str, raw: dict[str, Any]) -> ReleaseModel:
    """Validate (once) the model a ``policy.updated`` carried; raises if it does not parse."""
    if sha256 not in _PARSED:
        _PARSED[sha256] = ReleaseModel.model_validate(raw)
    return _PARSED[sha256]


async def keep(conn: asyncpg.Connection, sha256: str, raw: dict[str, Any], updated_by: str) -> None:
    """Put a model in force in the caller's schema (after checking that it parses), once the
    decisions under way under the old one have committed (they are then visible to the
    caller, which judges them again)."""
    model_in_force(sha256, raw)
    await conn.execute(_CHANGE_MODEL)
    await conn.execute(
        """INSERT INTO policy (only_one, sha256, model, updated_by) VALUES (true, $1, $2::jsonb, $3)
           ON CONFLICT (only_one) DO UPDATE
           SET sha256 = EXCLUDED.sha256, model = EXCLUDED.model,
               updated_by = EXCLUDED.updated_by, updated_at = now()""",
        sha256, json.dumps(raw), updated_by,
    )  # fmt: skip


async def in_force(conn: asyncpg.Connection) -> tuple[str, ReleaseModel] | None:
    """(sha256, model) in force in the caller's schema, or None before the first one; held
    until the caller's transaction ends (a change of model waits for it)."""
    await conn.execute(f"SELECT {HOLD_MODEL}")  # its own statement: the next one sees a change
    sha256: str | None = await conn.fetchval("SELECT sha256 FROM policy")
    if sha256 is None:
        return None
    if sha256 not in _PARSED:
        raw = await conn.fetchval("SELECT model FROM policy")
        model_in_force(sha256, json.loads(raw))
    return sha256, _PARSED[sha256]
