"""The bus suite (tests/integration/bus_suite), run on the in-memory twin of the broker and on
the real Kafka, with the real Postgres both times: the same case must hold on both, so the
twin (shared.bus.memory) cannot drift from the broker it stands in for."""

from __future__ import annotations

import pytest

from tests.integration.bus_suite.cases import CASES, OVERRIDES
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.integration

BROKERS = ("memory", "kafka")


@pytest.fixture(scope="module")
async def shared(
    new_namespace: NamespaceFactory, new_memory_namespace: NamespaceFactory
) -> dict[str, Namespace]:
    """A namespace per broker for the cases that need no settings of their own."""
    return {"memory": await new_memory_namespace(), "kafka": await new_namespace()}


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("name", list(CASES))
async def test_bus(
    name: str,
    broker: str,
    new_namespace: NamespaceFactory,
    new_memory_namespace: NamespaceFactory,
    shared: dict[str, Namespace],
) -> None:
    make = new_memory_namespace if broker == "memory" else new_namespace
    ns = await make(**OVERRIDES[name]) if name in OVERRIDES else shared[broker]
    assert ns.broker == broker
    await CASES[name](ns)
