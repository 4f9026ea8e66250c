"""Sends the queued webhooks (generic JSON, or PagerDuty Events API v2): each is claimed for a
minute, posted, and marked sent; a failure is retried with backoff, up to 8 attempts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import asyncpg
import httpx

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 8

_CLAIM = """
UPDATE notifications SET attempts = attempts + 1, next_attempt_at = now() + interval '60 s'
WHERE id IN (SELECT id FROM notifications WHERE state = 'pending' AND next_attempt_at <= now()
             ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED)
RETURNING id, url, payload::text, attempts
"""


class Notifier:
    name = "incidents webhook sender"

    def __init__(self, pool: asyncpg.Pool, every_s: float = 1.0) -> None:
        self._pool = pool
        self._every_s = every_s

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while not stop.is_set():
                try:
                    await self.send_due(http)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("incidents: could not send webhooks: %r", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._every_s)

    async def send_due(self, http: httpx.AsyncClient) -> int:
        async with self._pool.acquire() as conn:
            due = await conn.fetch(_CLAIM)
        for row in due:
            error: str | None = None
            hopeless = False  # what no retry will mend (a URL httpx cannot even use)
            try:
                response = await http.post(row["url"], json=json.loads(row["payload"]))
                if response.status_code >= 300:
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                error, hopeless = f"{type(exc).__name__}: {exc}", True
            async with self._pool.acquire() as conn:
                if error is None:
                    await conn.execute(
                        "UPDATE notifications SET state = 'sent', last_error = NULL WHERE id = $1",
                        row["id"],
                    )
                elif hopeless or row["attempts"] >= MAX_ATTEMPTS:
                    await conn.execute(
                        "UPDATE notifications SET state = 'failed', last_error = $2 WHERE id = $1",
                        row["id"], error,
                    )  # fmt: skip
                    log.error("incidents: webhook %s failed for good: %s", row["url"], error)
                else:
                    await conn.execute(
                        "UPDATE notifications SET last_error = $2, next_attempt_at = now() + "
                        "make_interval(secs => $3) WHERE id = $1",
                        row["id"], error, float(2 ** row["attempts"]),
                    )  # fmt: skip
        return len(due)
