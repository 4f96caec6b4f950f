"""The evidence service's config file (``kind: evidence``): store, identifier node, tokens.

A token is configured by the SHA-256 of its secret, never the secret itself: the file can be
read by whoever runs the service without handing out access to the firms' data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

import identifiers
from common import ConfigPath, Duration, ListenSettings, StrictModel
from ingest.config import IdentifierSettings

Role = Literal["admin", "provider", "evaluator"]


class DatabaseSettings(StrictModel):
    dsn: str = Field(
        description="libpq connection string of the ingest store; the service only reads, so "
        "a role with SELECT rights is enough; keep the password in PGPASSFILE"
    )
    pool_max: int = Field(4, ge=1, le=100, description="connections to the store at most")


class RegistrySettings(IdentifierSettings):
    token_file: ConfigPath = Field(
        description="file holding a token of the identifier node for the firms' prefixes: "
        "listing a prefix finds the registered devices a firm never sent data for"
    )


class MetricsSettings(StrictModel):
    """The knobs of the metrics (docs/evidence.md); every answer states the ones it used."""

    fresh_within: Duration = Field(
        300.0, description="a device is live (and networked) while its newest sample is younger"
    )
    outage_after: Duration = Field(60.0, description="a gateway silent longer than this was out")


class TokenSettings(StrictModel):
    name: str = Field(min_length=1, description="who holds it; named in logs, never the secret")
    role: Role
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex SHA-256 of the secret (`guantong evidence token` prints both)",
    )
    firms: tuple[str, ...] = Field(
        (), description="the firm identifiers a provider or evaluator sees; none for an admin"
    )
    expires: AwareDatetime | None = Field(None, description="refused from then on")

    @field_validator("firms")
    @classmethod
    def _firms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(identifiers.parse(firm)) for firm in value)

    @model_validator(mode="after")
    def _scope(self) -> TokenSettings:
        if self.role == "admin" and self.firms:
            raise ValueError("an admin sees every firm: leave firms out")
        if self.role != "admin" and not self.firms:
            raise ValueError(f"a {self.role} token needs the firms it may see")
        return self


class EvidenceConfig(ListenSettings):
    kind: Literal["evidence"]
    listen: str = Field(
        "127.0.0.1:8090", description="host:port of the API and web page (port 0: any free one)"
    )
    database: DatabaseSettings
    identifiers: RegistrySettings
    metrics: MetricsSettings = MetricsSettings()
    tokens: tuple[TokenSettings, ...] = Field(min_length=1)
    report_key: ConfigPath | None = Field(
        None,
        description="the platform's Ed25519 key file that signs reports (made on first use, "
        "mode 0600; publish its fingerprint); without it the API exports no report",
    )

    @model_validator(mode="after")
    def _unique(self) -> EvidenceConfig:
        for field in ("name", "sha256"):
            values = [getattr(t, field) for t in self.tokens]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"token {field} given twice: {', '.join(twice)}")
        return self
