"""The bus suite (tests/integration/bus_suite), run on the in-memory twin of the broker and on
the real Kafka, with the real Postgres both times: the same case must hold on both, so the
twin (shared.bus.memory) cannot drift from the broker it stands in for."""

from __future__ import annotations

import pytest

from tests.integration.bus_suite.cases import CASES, OVERRIDES
from tests.integration.conftest import Namespace, NamespaceFactory

pytestmark = pytest.mark.integration

BROKERS = ("memory", "kafka")
_shared: dict[str, Namespace] = {}


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("name", list(CASES))
async def test_bus(
    name: str,
    broker: str,
    new_namespace: NamespaceFactory,
    new_memory_namespace: NamespaceFactory,
) -> None:
    make = new_memory_namespace if broker == "memory" else new_namespace
    if name in OVERRIDES:
        ns = await make(**OVERRIDES[name])
    else:  # cases that need no settings of their own share a namespace per broker
        if broker not in _shared:
            _shared[broker] = await make()
        ns = _shared[broker]
    assert ns.broker == broker
    await CASES[name](ns)
