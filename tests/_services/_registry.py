"""The session's servers: found or started on first use, remembered for the report, stopped."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from ._base import Server, ServiceError
from ._mosquitto import URL_ENV, ExternalMqtt, MosquittoBroker, MqttServer, SecureMqtt
from ._mosquitto import secure_mosquitto as _secure_mosquitto
from ._postgres import DSN_ENV, ExternalPostgres, PostgresCluster, PostgresServer
from ._tansu import BOOTSTRAP_ENV, ExternalKafka, KafkaServer, TansuBroker

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Services:
    """Lazily provides one server of each kind for the whole test session.

    A run that needs no Kafka never starts Tansu. A server that failed to start is not
    tried again: every later test gets the same error at once instead of another timeout.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self._made: dict[str, object] = {}
        self._errors: dict[str, ServiceError] = {}
        self._servers: list[Server] = []
        self._started: list[Server] = []
        #: one line per server used, kept after the servers stop (for the terminal summary)
        self.used: list[str] = []

    def _get(self, name: str, make: Callable[[], T], server_of: Callable[[T], Server]) -> T:
        if name in self._errors:
            raise self._errors[name]
        if name not in self._made:
            try:
                made = make()
                server = server_of(made)
                if server.managed:
                    self._servers.append(server)
                    server.start()
                    self._started.append(server)
            except ServiceError as exc:
                self._errors[name] = exc
                raise
            self._made[name] = made
            self.used.append(server.describe())
        return self._made[name]  # type: ignore[return-value]

    def ensure_running(self) -> None:
        """Start again any session server an earlier test stopped and did not bring back.

        That test is wrong, but the tests after it should not all fail for it.
        """
        for server in self._started:
            if not server.running:
                logger.warning("%s was left stopped by a test: starting it again", server.kind)
                server.start()

    def postgres(self) -> PostgresServer:
        def make() -> PostgresServer:
            dsn = self.env.get(DSN_ENV)
            return ExternalPostgres(dsn) if dsn else PostgresCluster()

        return self._get("postgres", make, lambda s: s)

    def mqtt(self) -> MqttServer:
        def make() -> MqttServer:
            url = self.env.get(URL_ENV)
            return ExternalMqtt(url) if url else MosquittoBroker()

        return self._get("mqtt", make, lambda s: s)

    def mqtt_secure(self) -> SecureMqtt:
        """Always a Mosquitto of our own: its config (TLS, passwords, ACL) is the point."""
        return self._get("mqtt-secure", _secure_mosquitto, lambda s: s.broker)

    def kafka(self) -> KafkaServer:
        def make() -> KafkaServer:
            bootstrap = self.env.get(BOOTSTRAP_ENV)
            return ExternalKafka(bootstrap) if bootstrap else TansuBroker()

        return self._get("kafka", make, lambda s: s)

    def sources(self) -> list[str]:
        """Where each kind of server would come from, without starting any."""
        return [
            f"PostgreSQL: {DSN_ENV}" if self.env.get(DSN_ENV) else "PostgreSQL: throwaway cluster",
            f"MQTT: {URL_ENV}" if self.env.get(URL_ENV) else "MQTT: mosquitto on a free port",
            f"Kafka: {BOOTSTRAP_ENV}" if self.env.get(BOOTSTRAP_ENV) else "Kafka: Tansu",
        ]

    def close(self) -> None:
        """Stop every server this registry started (idempotent)."""
        servers, self._servers, self._started = self._servers, [], []
        for server in reversed(servers):
            server.close()
