"""End-to-end tests: the services run as processes, on the real Kafka and Postgres."""

from tests.integration.conftest import (  # noqa: F401 - the shared fixtures
    _a_tests_namespaces_stop_reading,
    new_namespace,
)
