"""Real servers for the tests: PostgreSQL, Mosquitto (plain and secured), the demo's embedded
MQTT broker (amqtt), a Kafka broker and TimescaleDB (in PGlite); and ``kiln_works``, the
factory file the pipeline tests run the PLC simulators with; ``wait_until``, ``fetch`` and
``count`` for polling and reading the store.

``tests/conftest.py`` turns these into fixtures; fault tests may also build private
servers directly (``with MosquittoBroker() as broker: ...``). See ``docs/testing.md``.

Exceptions::

    ServiceError   a server could not be found, started or stopped (the message says why,
                   with the tail of the server's log)
"""

from ._amqtt import AmqttBroker
from ._base import KEEP_ENV, Server, ServiceError, free_port, load_conftest
from ._factories import ingest_config, kiln_works
from ._mosquitto import (
    URL_ENV,
    ExternalMqtt,
    MosquittoBroker,
    MqttServer,
    MqttUser,
    SecureMqtt,
    secure_mosquitto,
)
from ._pglite import pglite_installed, pglite_timescale
from ._pki import CertFiles, CertificateAuthority
from ._polling import count, fetch, wait_until
from ._postgres import DSN_ENV, ExternalPostgres, PostgresCluster, PostgresServer
from ._registry import Services
from ._tansu import BOOTSTRAP_ENV, ExternalKafka, KafkaNamespace, KafkaServer, TansuBroker

__all__ = [
    "BOOTSTRAP_ENV",
    "DSN_ENV",
    "KEEP_ENV",
    "URL_ENV",
    "AmqttBroker",
    "CertFiles",
    "CertificateAuthority",
    "ExternalKafka",
    "ExternalMqtt",
    "ExternalPostgres",
    "KafkaNamespace",
    "KafkaServer",
    "MosquittoBroker",
    "MqttServer",
    "MqttUser",
    "PostgresCluster",
    "PostgresServer",
    "SecureMqtt",
    "Server",
    "ServiceError",
    "Services",
    "TansuBroker",
    "count",
    "fetch",
    "free_port",
    "ingest_config",
    "kiln_works",
    "load_conftest",
    "pglite_installed",
    "pglite_timescale",
    "secure_mosquitto",
    "wait_until",
]
