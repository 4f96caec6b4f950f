"""The ingest config file (``kind: ingest``): database, broker, identifier node, batching.

Everything but the database DSN and the identifier node has a default that suits one server
next to its broker and database. Unknown fields are errors, as in every Guantong config.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
)

from common import Duration, ListenSettings, MqttClientSettings, StrictModel


class DatabaseSettings(StrictModel):
    dsn: str = Field(description="libpq connection string; keep the password in PGPASSFILE")
    partitions_ahead: int = Field(
        7, ge=1, le=366, description="daily sample partitions created ahead of today"
    )
    compress_after: Duration = Field(
        7 * 86400.0,
        description="TimescaleDB only: compress chunks older than this; longer than any "
        "gateway's replay window (outbox backlog), since late rows into compressed chunks "
        "are slow",
    )


class MqttSettings(MqttClientSettings):
    client_id: str = Field(
        "guantong-ingest",
        min_length=1,
        max_length=64,
        description="fixed: the broker keeps the persistent session under this id",
    )
    session_expiry: Duration = Field(
        7 * 86400.0, description="how long the broker keeps the session while ingest is away"
    )
    receive_maximum: int = Field(
        1000,
        ge=1,
        le=65535,
        description="QoS 1 messages the broker may send before ingest acknowledges "
        "(acknowledged only after commit, so this bounds a batch)",
    )


class IdentifierSettings(StrictModel):
    node: str = Field(description="URL of the identifier node that resolves gateways and devices")
    cache_seconds: Duration = Field(
        60.0, description="how long a resolved gateway or device is reused without asking"
    )

    @field_validator("node")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("node must be an http:// or https:// URL")
        return value


class BatchSettings(StrictModel):
    max_rows: int = Field(20_000, ge=1, le=1_000_000, description="samples per transaction")
    max_delay: Duration = Field(0.2, description="longest a message waits to be committed")
    decode_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="processes that decode envelopes (most of the CPU per sample) while "
        "ingest verifies and writes; 0 decodes in the ingest process (one core)",
    )
    queue_messages: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="received messages waiting for verification; when full, ingest stops "
        "reading from the broker",
    )


class HealthSettings(ListenSettings):
    listen: str = Field(
        "127.0.0.1:9109", description="host:port of /healthz and /metrics (port 0: any free one)"
    )


class IngestConfig(StrictModel):
    kind: Literal["ingest"]
    database: DatabaseSettings
    identifiers: IdentifierSettings
    mqtt: MqttSettings = MqttSettings()
    batch: BatchSettings = BatchSettings()
    health: HealthSettings | None = HealthSettings()
