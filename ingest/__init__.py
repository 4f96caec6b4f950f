"""Ingest, single node: MQTT → verified → PostgreSQL (or TimescaleDB), nothing silently dropped.

Subscribes to ``gt/v1/#`` with a persistent MQTT 5 session at QoS 1, verifies every envelope
against the key in its gateway's identifier record, follows each gateway's hash chain, writes
samples by binary COPY and acknowledges a message only after the transaction holding it has
committed. Anything that cannot be trusted or stored goes to the ``quarantine`` table with a
reason. docs/ingest.md describes the schema, the guarantees and the config.

Scale-out (docs/kafka.md): bridges forward MQTT to a Kafka topic keyed by gateway, and sinks
run the same pipeline from a Kafka consumer group, committing offsets after the database.

Public API::

    IngestConfig                 the ``kind: ingest`` config file
    SinkConfig, BridgeConfig     ``kind: ingest-sink`` and ``kind: ingest-bridge`` (Kafka)
    Ingest                       the running pipeline (async context manager), from MQTT
                                 or, given a SinkConfig, from a Kafka consumer group
    Bridge                       MQTT shared subscription → Kafka (async context manager)
    migrate                      apply the store's migrations to a database
    Store, Batch                 the store: dimension ids, chain lookups, batch transactions
    Verifier, Message, REASONS   from a message to rows or to quarantine, and the reasons
    LATEST_SCHEMA                the newest schema version this code knows

Exceptions::

    Exception
    └── IngestError
        ├── StoreError           the database refused something retrying will not fix
        │   └── MigrationError   schema newer than this code, or none at all
        ├── ConsumerError        the MQTT consumer cannot start (credentials, TLS files)
        └── SourceUnavailable    the Kafka brokers cannot be reached at start

The database or the broker being away is not an error: ingest waits, retries and keeps
everything unacknowledged meanwhile (``/healthz`` and ``/metrics`` show it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest._bridge import Bridge
    from ingest._errors import (
        ConsumerError,
        IngestError,
        MigrationError,
        SourceUnavailable,
        StoreError,
    )
    from ingest._runtime import Ingest, migrate
    from ingest._schema import LATEST as LATEST_SCHEMA
    from ingest._store import Batch, Store
    from ingest._verify import REASONS, Message, Verifier
    from ingest.config import BridgeConfig, IngestConfig, SinkConfig

__all__ = [
    "LATEST_SCHEMA",
    "REASONS",
    "Batch",
    "Bridge",
    "BridgeConfig",
    "ConsumerError",
    "Ingest",
    "IngestConfig",
    "IngestError",
    "Message",
    "MigrationError",
    "SinkConfig",
    "SourceUnavailable",
    "Store",
    "StoreError",
    "Verifier",
    "migrate",
]

#: name → (module, attribute). Imported on first use: a decode worker process imports
#: ``ingest._decode`` and needs none of the rest (psycopg, paho, the HTTP server), whose
#: import took half a second of every start of ingest with a decode worker.
_LAZY = {
    "Bridge": ("ingest._bridge", "Bridge"),
    "BridgeConfig": ("ingest.config", "BridgeConfig"),
    "ConsumerError": ("ingest._errors", "ConsumerError"),
    "SinkConfig": ("ingest.config", "SinkConfig"),
    "SourceUnavailable": ("ingest._errors", "SourceUnavailable"),
    "IngestError": ("ingest._errors", "IngestError"),
    "MigrationError": ("ingest._errors", "MigrationError"),
    "StoreError": ("ingest._errors", "StoreError"),
    "Ingest": ("ingest._runtime", "Ingest"),
    "migrate": ("ingest._runtime", "migrate"),
    "LATEST_SCHEMA": ("ingest._schema", "LATEST"),
    "Batch": ("ingest._store", "Batch"),
    "Store": ("ingest._store", "Store"),
    "REASONS": ("ingest._verify", "REASONS"),
    "Message": ("ingest._verify", "Message"),
    "Verifier": ("ingest._verify", "Verifier"),
    "IngestConfig": ("ingest.config", "IngestConfig"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'ingest' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
