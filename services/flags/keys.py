"""API keys: each is scoped to one environment and a role — ``evaluate`` (OFREP) or
``admin`` (changes; ``*`` for every environment). Only a key's sha256 is stored; the key is
shown once, when created."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

ALL_ENVIRONMENTS = "*"
ROLES = ("evaluate", "admin")


@dataclass(frozen=True)
class ApiKey:
    prefix: str
    environment: str
    role: str
    name: str

    def may_evaluate(self, environment: str) -> bool:
        return self.environment in (environment, ALL_ENVIRONMENTS)

    def may_change(self, environment: str) -> bool:
        return self.role == "admin" and self.may_evaluate(environment)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create(
    conn: asyncpg.Connection, environment: str, role: str, name: str, at: datetime
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if environment == ALL_ENVIRONMENTS and role != "admin":
        raise ValueError("an evaluate key is for one environment")
    key = "lsk_" + secrets.token_urlsafe(24)
    await conn.execute(
        "INSERT INTO api_keys (key_hash, key_prefix, environment, role, name, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        digest(key),
        key[:10],
        environment,
        role,
        name,
        at,
    )
    return key


async def revoke(conn: asyncpg.Connection, prefix: str, at: datetime) -> int:
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = $2 WHERE key_prefix = $1 AND revoked_at IS NULL",
        prefix,
        at,
    )
    return int(status.split()[-1])


async def listed(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT key_prefix, environment, role, name, created_at, revoked_at FROM api_keys "
        "ORDER BY created_at"
    )
    return rows


class KeyRing:
    """The valid keys, held in memory and refreshed every few seconds (and on an unknown key,
    at most once a second), so a key works or stops working within seconds of the change."""

    def __init__(self, pool: asyncpg.Pool, refresh_s: float = 5.0) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._keys: dict[str, ApiKey] = {}
        self._loaded_at = float("-inf")

    async def find(self, key: str) -> ApiKey | None:
        hashed = digest(key)
        age = time.monotonic() - self._loaded_at
        if age > self._refresh_s or (hashed not in self._keys and age > 1.0):
            await self._load()
        return self._keys.get(hashed)

    async def _load(self) -> None:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT key_hash, key_prefix, environment, role, name FROM api_keys "
                "WHERE revoked_at IS NULL"
            )
        self._keys = {
            r["key_hash"]: ApiKey(r["key_prefix"], r["environment"], r["role"], r["name"])
            for r in rows
        }
        self._loaded_at = time.monotonic()
