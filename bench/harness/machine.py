"""What a result file says about the machine it was measured on, and Postgres checks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from harness import REPO
from harness.stats import summary_ms
from shared.settings import Settings


def kafka_version() -> str | None:
    pom = REPO / "infra" / "pom.xml"
    with contextlib.suppress(OSError):
        found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
        if found:
            return found.group(1).strip()
    libs = REPO / ".lockstep" / "kafka" / "libs"
    for jar in sorted(libs.glob("kafka-clients-*.jar")) if libs.is_dir() else []:
        return jar.name.removeprefix("kafka-clients-").removesuffix(".jar")
    return None


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def memory_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: anything else busy on the machine shows here."""
    with contextlib.suppress(OSError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def git_revision() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


async def machine_info(settings: Settings) -> dict[str, Any]:
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        pg_version = await conn.fetchval("SELECT version()")
        pg_settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay")
        }
    finally:
        await conn.close()
    return host(
        ("aiokafka", "asyncpg", "pydantic", "opentelemetry-sdk"),
        kafka_version=kafka_version(),
        postgres_version=pg_version,
        postgres_settings=pg_settings,
    )


def host(dists: tuple[str, ...], **more: Any) -> dict[str, Any]:
    """The machine, the versions of ``dists`` (None where not installed), ``more``, the git
    revision, the load and the date: what every result file says of where it was measured."""
    libs: dict[str, str | None] = {}
    for dist in dists:
        try:
            libs[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            libs[dist] = None
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_mib": memory_mib(),
        "python": platform.python_version(),
        **more,
        "libraries": libs,
        "git": git_revision(),
        "loadavg_at_start": loadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


async def postmaster_start(settings: Settings) -> datetime:
    """When Postgres started: a different answer at the end means it restarted mid-run."""
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        started: datetime = await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()
    return started


async def pg_commit_probe(settings: Settings, n: int = 200) -> dict[str, float]:
    """What one small INSERT + COMMIT costs on this Postgres (the WAL flush per transaction).
    Its schema, ``<ns>_probe``, goes with the namespace's other schemas at clean-up."""
    schema = settings.db_schema("probe")
    conn = await asyncio.wait_for(asyncpg.connect(settings.pg_dsn), 10)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".t (id bigserial PRIMARY KEY, v text)')
        timings = []
        for i in range(n):
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.execute(f'INSERT INTO "{schema}".t (v) VALUES ($1)', str(i))
            timings.append((time.perf_counter() - t0) * 1000)
    finally:
        await conn.close()
    return summary_ms(timings)
