"""The gateway config file (``kind: gateway``): who the gateway is and which devices it reads.

Uplink, outbox and signing settings join this model with issue #6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

import identifiers
from edge import Device, StrictModel
from edge._model import IdentifierStr, non_empty


class GatewayIdentity(StrictModel):
    id: IdentifierStr = Field(description="the gateway's own identifier")
    enterprise: IdentifierStr = Field(description="identifier of the firm that runs the gateway")
    key_file: Path = Field(
        description="Ed25519 private key of the gateway; relative to the config file"
    )

    @field_validator("key_file")
    @classmethod
    def _relative_to_config(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return value if value.is_absolute() or base is None else Path(base) / value


class GatewayConfig(StrictModel):
    kind: Literal["gateway"]
    gateway: GatewayIdentity
    devices: Annotated[tuple[Device, ...], AfterValidator(non_empty)]

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
