"""Shared fixtures: real PostgreSQL, MQTT and Kafka-protocol servers (see docs/testing.md).

Servers start on first use and live for the session; each test gets its own database
(``pg_dsn``) or topic prefix (``kafka_namespace``, ``mqtt_topic_prefix``). The summary at the
end of the run names every server used, with its version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from _services import (
    KafkaNamespace,
    KafkaServer,
    MqttServer,
    PostgresServer,
    SecureMqtt,
    Services,
)

_SERVICES = pytest.StashKey[Services]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SERVICES] = Services()


def pytest_unconfigure(config: pytest.Config) -> None:
    if services := config.stash.get(_SERVICES, None):
        services.close()


def pytest_report_header(config: pytest.Config) -> str:
    return "test servers (on first use): " + "; ".join(config.stash[_SERVICES].sources())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    used = config.stash[_SERVICES].used
    if used:
        terminalreporter.write_sep("-", "real servers used")
        for line in used:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def services(pytestconfig: pytest.Config) -> Iterator[Services]:
    registry = pytestconfig.stash[_SERVICES]
    yield registry
    registry.close()


@pytest.fixture(autouse=True)
def _session_servers_running(services: Services) -> None:
    services.ensure_running()


@pytest.fixture(scope="session")
def pg_server(services: Services) -> PostgresServer:
    """The session's PostgreSQL: ``GUANTONG_TEST_PG_DSN`` or a throwaway cluster."""
    return services.postgres()


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """The DSN of a fresh, empty database of this test's own, dropped afterwards."""
    with pg_server.database() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def mqtt_broker(services: Services) -> MqttServer:
    """The session's plain MQTT broker: ``GUANTONG_TEST_MQTT_URL`` or a Mosquitto of our own."""
    return services.mqtt()


@pytest.fixture
def mqtt_topic_prefix() -> str:
    """A topic level of this test's own (``test/<hex>/``) on the shared broker."""
    return f"test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(scope="session")
def mqtt_secure(services: Services) -> SecureMqtt:
    """A TLS-only Mosquitto with client certificates, a password file and an ACL."""
    return services.mqtt_secure()


@pytest.fixture(scope="session")
def kafka_broker(services: Services) -> KafkaServer:
    """The session's Kafka-protocol broker: ``GUANTONG_TEST_KAFKA`` or Tansu."""
    return services.kafka()


@pytest.fixture
def kafka_namespace(kafka_broker: KafkaServer) -> KafkaNamespace:
    """A topic and group prefix of this test's own on the shared broker."""
    return KafkaNamespace(kafka_broker, f"t-{uuid.uuid4().hex[:12]}-")
