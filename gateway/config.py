"""The gateway config file (``kind: gateway``): who the gateway is, which devices it reads,
how it batches samples into envelopes, where its outbox lives and which broker it publishes to.

Everything but the identity and the devices has a default, so a config generated for the
simulators, or written by a technician in a hurry, runs as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

import identifiers
from common import ConfigPath, Duration, ListenSettings, MqttClientSettings, Size, StrictModel
from edge import Device
from edge._model import IdentifierStr, non_empty
from gateway.protocol import MAX_PAYLOAD_BYTES, MAX_SAMPLES


class GatewayIdentity(StrictModel):
    id: IdentifierStr = Field(description="the gateway's own identifier")
    enterprise: IdentifierStr = Field(description="identifier of the firm that runs the gateway")
    key_file: ConfigPath = Field(
        description="Ed25519 private key of the gateway; relative to the config file"
    )


class UplinkSettings(MqttClientSettings):
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version")
    client_id: str | None = Field(None, description="MQTT client id; default: the gateway id")
    inflight: int = Field(100, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK")
    format: Literal["json", "sparkplug"] = Field(
        "json", description="payload format: JSON envelopes, or Sparkplug B 3.0 (docs/protocol.md)"
    )
    sparkplug_group: str | None = Field(
        None, pattern=r"^[^+/#]+$", description="Sparkplug group id; default: the firm prefix"
    )
    checkpoint_interval: Duration | None = Field(
        300.0,
        ge=1,
        le=86400,
        description="period of the signed checkpoints attesting the samples sent, aligned to "
        "the clock (docs/protocol.md, Checkpoints); null turns them off",
    )

    @model_validator(mode="after")
    def _sparkplug(self) -> UplinkSettings:
        if self.sparkplug_group is not None and self.format != "sparkplug":
            raise ValueError("sparkplug_group goes with format: sparkplug")
        return self


class EnvelopeSettings(StrictModel):
    max_samples: int = Field(
        500, ge=1, le=MAX_SAMPLES, description="an envelope is sent once it holds this many"
    )
    max_delay: Duration = Field(
        0.2, gt=0, le=60, description="…or once its oldest sample has waited this long"
    )


class OutboxSettings(StrictModel):
    path: ConfigPath = Field(
        Path("outbox.db"), validate_default=True, description="SQLite file; relative to the config"
    )
    max_bytes: Size = Field(
        1 << 30, ge=16 * MAX_PAYLOAD_BYTES, description="bound on the envelopes it holds"
    )


class HealthSettings(ListenSettings):
    listen: str = Field(
        "127.0.0.1:9108", description="host:port of /healthz and /metrics (port 0: any free one)"
    )


class GatewayConfig(StrictModel):
    kind: Literal["gateway"]
    gateway: GatewayIdentity
    devices: Annotated[tuple[Device, ...], AfterValidator(non_empty)]
    uplink: UplinkSettings = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    envelope: EnvelopeSettings = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    outbox: OutboxSettings = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    health: HealthSettings | None = Field(
        default_factory=dict,  # type: ignore[arg-type]
        validate_default=True,
        description="the local health and metrics endpoint; null turns it off",
    )

    @model_validator(mode="after")
    def _one_firm(self) -> GatewayConfig:
        """A gateway speaks only for its own firm: every identifier is under the firm's prefix."""
        prefix = identifiers.parse(self.gateway.enterprise).prefix
        if identifiers.parse(self.gateway.id).prefix != prefix:
            raise ValueError(f"gateway id {self.gateway.id!r} is not under the firm's {prefix!r}")
        names = [d.name for d in self.devices]
        ids = [d.id for d in self.devices]
        for what, values in (("device name", names), ("device id", ids)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate {what} {dupes[0]!r}")
        for device in self.devices:
            if identifiers.parse(device.id).prefix != prefix:
                raise ValueError(
                    f"device {device.name!r}: id {device.id!r} is not under the firm's {prefix!r}"
                )
        return self
