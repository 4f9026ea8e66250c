"""A run's namespace: every Kafka topic, consumer group and Postgres schema a bench creates is
named after it (``<ns>.<topic>``, ``<ns>.<group>``, ``<ns>_<schema>``), so that clean-up can
remove all of them by name, whatever the run got to."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from harness import REPO
from shared.bus.admin import delete_namespace_groups, delete_namespace_topics
from shared.bus.kafka_client import kafka_admin
from shared.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def new_settings(prefix: str = "bench", **overrides: Any) -> Settings:
    """Settings for a fresh ``<prefix>_<8 hex>`` namespace on loopback hosts only. The bench
    process keeps no span files unless ``trace_dir`` is given (a temp dir), and exports none;
    relative paths are the checkout's, not the working directory's."""
    overrides.setdefault("trace_dir", None)
    overrides.setdefault("otlp_endpoint", None)
    settings = Settings(namespace=f"{prefix}_{uuid.uuid4().hex[:8]}", **overrides)
    check_loopback(settings)
    if not settings.flagd_schema_dir.is_absolute():  # the checkout's, from any working dir
        settings = settings.model_copy(
            update={"flagd_schema_dir": REPO / settings.flagd_schema_dir}
        )
    return settings


def check_loopback(settings: Settings) -> None:
    hosts = [h.rsplit(":", 1)[0].strip("[]") for h in settings.kafka_bootstrap.split(",")]
    pg_host = re.sub(r"^.*@", "", settings.pg_dsn.split("//", 1)[-1]).split("/", 1)[0]
    pg_host = pg_host.rsplit(":", 1)[0].strip("[]")
    bad = [h for h in [*hosts, pg_host] if h not in LOOPBACK]
    if bad:
        raise SystemExit(f"refusing to run against non-loopback hosts {bad}: this bench is local")


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return kafka_admin(settings.as_principal("admin"), client_id="bench-admin")


def _own(settings: Settings, name: str) -> bool:
    return name.startswith(settings.namespace + ".")


async def create_topics(settings: Settings, names: list[str]) -> None:
    """The bench's own topics (the floor's), with the partitions and replication that
    ``ensure_topics`` gives the namespace's; named ``<ns>.…`` so that clean-up finds them."""
    assert all(_own(settings, n) for n in names), names
    admin = _admin(settings)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster()).get("brokers", [])) or 1
        await admin.create_topics(
            [NewTopic(t, settings.topic_partitions, max(1, min(3, brokers))) for t in names]
        )
    finally:
        await admin.close()
    await wait_for_leaders(settings, names)


async def wait_for_leaders(settings: Settings, names: list[str], timeout_s: float = 30.0) -> None:
    """Until every partition of ``names`` has a leader (new topics take a moment)."""
    admin = _admin(settings)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(names)
            ready = [
                d
                for d in described
                if d.get("error_code", 0) == 0
                and d.get("partitions")
                and all(p.get("leader", -1) >= 0 and not p["error_code"] for p in d["partitions"])
            ]
            if len(ready) == len(names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"partitions of {names} have no leader after {timeout_s:g}s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_own_topics(settings: Settings) -> None:
    """The namespace's topics (``delete_namespace_topics``), then any other ``<ns>.…`` topic
    the bench made (the floor's)."""
    await delete_namespace_topics(settings)
    admin = _admin(settings)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if _own(settings, t)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def delete_own_groups(settings: Settings, timeout_s: float = 25.0) -> None:
    """Every consumer group named ``<ns>.…``: the services', the floor's hops', the watchers'."""
    await delete_namespace_groups(settings, timeout_s)


async def leftovers(settings: Settings) -> dict[str, list[str]]:
    """What of the namespace is still there (the check after clean-up)."""
    admin = _admin(settings)
    await admin.start()
    try:
        found = {
            "topics": sorted(t for t in await admin.list_topics() if _own(settings, t)),
            "groups": sorted(
                g[0] for g in await admin.list_consumer_groups() if _own(settings, g[0])
            ),
        }
    finally:
        await admin.close()
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT nspname FROM pg_namespace WHERE left(nspname, length($1)) = $1",
            settings.namespace + "_",
        )
    finally:
        await conn.close()
    found["schemas"] = sorted(r["nspname"] for r in rows)
    return found
