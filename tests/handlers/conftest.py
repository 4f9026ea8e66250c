"""Tests of services' handlers on the in-memory twin of the broker (``shared.bus.testing``):
the real Postgres, no Kafka (docs/testing.md). ``twin`` is a ``TwinBus`` on a namespace of
its own, whose schemas are dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.signing import KeyStore
from shared.bus.testing import TwinBus
from shared.settings import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/handlers" in str(item.path):
            item.add_marker(pytest.mark.twin)


@pytest.fixture
async def twin(tmp_path: Path) -> AsyncIterator[TwinBus]:
    settings = Settings(
        namespace="tw_" + uuid.uuid4().hex[:10],
        trace_dir=tmp_path / "traces",
        key_dir=tmp_path / "keys",
        kafka_principal="admin",  # the twin checks no login; the tests' own services' name
        topic_partitions=3,
        retry_backoff_s=0.01,
        relay_poll_s=0.2,
    )
    KeyStore(settings.key_dir).init("alice")  # every role's key: services that sign can run
    async with TwinBus(settings) as bus:
        yield bus
