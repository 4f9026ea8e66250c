"""An environment's flags as one flagd flag set: what the evaluators load, what
``lockstep flags export`` writes, and what flagd itself (or any flagd in-process provider)
loads unchanged."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.flags import store

FLAGD_SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"


async def document(conn: asyncpg.Connection, environment: str) -> tuple[dict[str, Any], int]:
    """(the flag set, its revision), read in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        parts = await store.flag_set(conn, environment)
        flags = await store.flags_of(conn, environment)
    doc: dict[str, Any] = {
        "$schema": FLAGD_SCHEMA_URL,
        "flags": {f.key: f.definition for f in flags},
    }
    revision = 0 if parts is None else parts.revision
    if parts is not None and parts.evaluators:
        doc["$evaluators"] = parts.evaluators
    doc["metadata"] = {
        **(parts.metadata if parts is not None else {}),
        "flagSetId": environment,
        "version": str(revision),
    }
    return doc, revision
