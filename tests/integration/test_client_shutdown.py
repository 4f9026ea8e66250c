"""A service that shuts down while one of its Kafka clients is still starting leaves no
socket open: aiokafka's bootstrap keeps its first connection to itself until the broker's
metadata answer is in, so a cancelled start used to leave that connection for the garbage
collector (and, after the event loop closed, for pytest's unraisable-exception check)."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from events import topics
from shared.bus.kafka_client import kafka_admin, kafka_consumer, kafka_producer
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.timeout(120)

# Cancelled after 0, 1, … 29 ms: on this broker a start (SCRAM login, metadata) takes a few
# milliseconds, so the steps fall before, inside and after the window that leaked.
DELAYS_S = [i / 1000 for i in range(30)]


@pytest.fixture(scope="module")
async def ns(new_namespace: NamespaceFactory) -> Namespace:
    return await new_namespace()


def clients(ns: Namespace) -> dict[str, Callable[[], Any]]:
    topic = ns.topic(topics.ARTIFACTS)
    return {
        "producer": lambda: kafka_producer(ns.settings, client_id="shutdown-test"),
        "consumer": lambda: kafka_consumer(
            ns.settings, topic, group_id=f"{ns.settings.namespace}.shutdown-test"
        ),
        "admin": lambda: kafka_admin(ns.settings, client_id="shutdown-test"),
    }


@pytest.mark.parametrize("kind", ["producer", "consumer", "admin"])
async def test_a_client_whose_start_is_cancelled_at_any_moment_leaves_no_connection_open(
    ns: Namespace, kind: str
) -> None:
    make = clients(ns)[kind]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for delay in DELAYS_S:
            client = make()
            starting = asyncio.ensure_future(client.start())
            await asyncio.sleep(delay)
            starting.cancel()
            try:
                await starting
            except asyncio.CancelledError:
                pass
            else:  # it had started before the cancel came: the caller closes it, as usual
                await (client.stop() if hasattr(client, "stop") else client.close())
            gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
