"""The ingest config files: ``kind: ingest`` (MQTT → database, one node), and for scale-out on
Kafka ``kind: ingest-bridge`` (MQTT → Kafka) and ``kind: ingest-sink`` (Kafka → database).

Everything but the database DSN, the identifier node and the Kafka brokers has a default that
suits one server next to its broker and database. Unknown fields are errors, as in every
Guantong config. docs/ingest.md and docs/kafka.md explain the settings.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

import gateway.protocol as wire
from common import Duration, ListenSettings, MqttClientSettings, Size, StrictModel


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
    protocol: Literal["3.1.1", "5"] = Field(
        "5",
        description="MQTT protocol version; 3.1.1 only for a broker without MQTT 5 (the "
        "demo's embedded one): the session is kept with clean_session=false for as long as "
        "the broker decides, and the broker's own in-flight limit bounds a batch",
    )
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

    @model_validator(mode="after")
    def _mqtt5_only(self) -> MqttSettings:
        """MQTT 5 properties have no 3.1.1 equivalent: refuse them rather than ignore them."""
        if self.protocol == "3.1.1":
            given = sorted({"session_expiry", "receive_maximum"} & self.model_fields_set)
            if given:
                raise ValueError(
                    f"{', '.join(given)}: MQTT 5 only; with protocol 3.1.1 the broker decides "
                    "how long a session lasts and how many messages are in flight "
                    "(Mosquitto: persistent_client_expiration, max_inflight_messages)"
                )
        return self


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
        0,
        ge=0,
        le=64,
        description="processes that decode envelopes while ingest verifies and writes; 0 "
        "decodes in the ingest process, which costs less CPU in all (docs/ingest.md, "
        "*Performance*)",
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


class _StoreConfig(StrictModel):
    """What every config that writes the store has: the pipeline's settings."""

    database: DatabaseSettings
    identifiers: IdentifierSettings
    batch: BatchSettings = BatchSettings()
    health: HealthSettings | None = HealthSettings()


class IngestConfig(_StoreConfig):
    kind: Literal["ingest"]
    mqtt: MqttSettings = MqttSettings()


class KafkaSettings(StrictModel):
    brokers: list[str] = Field(
        min_length=1, description="bootstrap brokers, host:port each (any Kafka-protocol broker)"
    )
    topic: str = Field(
        "guantong.envelopes",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="the topic envelopes travel on, keyed by gateway",
    )
    client_id: str = Field("guantong", min_length=1, description="shown in the broker's logs")

    @field_validator("brokers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for broker in value:
            host, sep, port = broker.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{broker!r}: a broker is host:port, e.g. kafka-1:9092")
        return value


class SinkKafkaSettings(KafkaSettings):
    group: str = Field(
        "guantong-sink",
        min_length=1,
        description="consumer group: the sinks of one group share the topic's partitions",
    )
    session_timeout: Duration = Field(
        10.0, description="a sink silent this long is taken out of the group"
    )
    rebalance_timeout: Duration = Field(
        30.0,
        description="how long a rebalance waits for the sinks to rejoin; a sink gives up to "
        "half of it to commit what it holds before its partitions go elsewhere",
    )
    fetch_records: int = Field(
        500, ge=1, le=100_000, description="records taken from the broker in one fetch"
    )


class SinkConfig(_StoreConfig):
    kind: Literal["ingest-sink"]
    kafka: SinkKafkaSettings


class BridgeMqttSettings(MqttSettings):
    client_id: str = Field(
        "guantong-bridge",
        min_length=1,
        max_length=64,
        description="unique per bridge: the broker keeps each bridge's session under its id",
    )
    share_group: str = Field(
        "guantong-bridge",
        pattern=r"^[^/+#]+$",
        description="MQTT shared-subscription group ($share/<group>/…): the bridges of one "
        "group split the messages between them",
    )

    @model_validator(mode="after")
    def _shared_needs_mqtt5(self) -> BridgeMqttSettings:
        if self.protocol != "5":
            raise ValueError(
                "the bridge subscribes as a member of a shared subscription ($share/…), an "
                "MQTT 5 feature: use protocol 5"
            )
        return self


#: the producer's default limit on a record: the largest payload the contract allows (Sparkplug
#: B) with room for the MQTT topic as key and header, and the other headers
MAX_REQUEST_SIZE = wire.MAX_SPARKPLUG_BYTES + (64 << 10)
#: a record cut to what quarantine keeps (64 KiB) with a topic of MQTT's maximum 64 KiB, as
#: key and header, always fits
MIN_REQUEST_SIZE = 256 << 10


class BridgeKafkaSettings(KafkaSettings):
    idempotent: bool = Field(
        True,
        description="idempotent producer: a retried produce is not stored twice (the broker "
        "must support InitProducerId)",
    )
    linger: Duration = Field(
        0.005, description="how long the producer waits to fill a batch before sending it"
    )
    max_request_size: Size = Field(
        MAX_REQUEST_SIZE,
        ge=MIN_REQUEST_SIZE,
        le=64 << 20,
        description="largest record the producer sends, payload, key and headers; the default "
        "lets every envelope the contract allows through (Sparkplug B's 4 MiB, plus 64 KiB "
        "for topic, key and headers). The broker's message.max.bytes (or the topic's "
        "max.message.bytes) must allow it. A message over what Kafka takes is forwarded cut "
        "to its first 64 KiB with its size, and quarantined as oversized by the sink",
    )


class BridgeHealthSettings(ListenSettings):
    listen: str = Field(
        "127.0.0.1:9110", description="host:port of /healthz and /metrics (port 0: any free one)"
    )


class BridgeConfig(StrictModel):
    kind: Literal["ingest-bridge"]
    mqtt: BridgeMqttSettings = BridgeMqttSettings()
    kafka: BridgeKafkaSettings
    queue_messages: int = Field(
        2000,
        ge=1,
        le=100_000,
        description="messages received and not yet handed to Kafka; when full, the bridge "
        "stops reading from the MQTT broker",
    )
    health: BridgeHealthSettings | None = BridgeHealthSettings()
