"""One bus test suite, run against the in-memory twin of the broker (``shared.bus.memory``)
and against the real Kafka, with the real Postgres both times (tests/integration/
test_bus_suite.py): each case asserts what a user of the bus relies on, so that the twin
cannot drift from the real thing unnoticed. Cases are in ``cases.py``."""
