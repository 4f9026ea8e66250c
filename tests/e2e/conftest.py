"""End-to-end tests: the services run as processes, on the real Kafka and Postgres."""

from tests.integration.conftest import new_namespace  # noqa: F401 - the shared fixture
