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
    model_validator,
)

from common import ConfigPath, Duration, ListenSettings, StrictModel, TlsSettings


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


class MqttSettings(StrictModel):
    broker: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://host:port, or mqtts://host:port for TLS"
    )
    client_id: str = Field(
        "guantong-ingest",
        min_length=1,
        max_length=64,
        description="fixed: the broker keeps the persistent session under this id",
    )
    username: str | None = None
    password_file: ConfigPath | None = Field(
        None, description="file holding the MQTT password (kept out of the config)"
    )
    tls: TlsSettings | None = None
    keepalive: Duration = 30.0
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

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker must look like mqtt://host:port or mqtts://host:port")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError("broker is host and port only; credentials go in username and "
                             "password_file")  # fmt: skip
        _ = parts.port
        return value

    @model_validator(mode="after")
    def _tls_scheme(self) -> MqttSettings:
        if (urlsplit(self.broker).scheme == "mqtts") != (self.tls is not None):
            raise ValueError("use mqtts:// together with a tls section, mqtt:// without one")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)


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
