"""Building blocks of the config files: strict models, durations, sizes, relative paths."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


class StrictModel(BaseModel):
    """Base of every config model: unknown fields are errors and loaded configs are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"500ms"``, ``"2s"``, ``"5m"``, ``"1h"``, ``"7d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '500ms'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        seconds = float(m["n"]) * _UNIT_SECONDS[m["unit"]]
    else:
        raise ValueError(f"{value!r} is not a duration such as '500ms', '2s', '5m', '1h' or '7d'")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}  # fmt: skip


def parse_size(value: object) -> int:
    """``"1GiB"``, ``"512 MiB"``, ``"500MB"`` or a number of bytes → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError("a size is a number of bytes or a string like '1GiB' or '500MB'")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return value if value.is_absolute() or base is None else Path(base) / value


#: the JSON Schema keeps the number a value becomes; ``x-format`` says what a file may write
#: (docs/configuration.md is generated from it)
Duration = Annotated[
    float, BeforeValidator(parse_duration), Field(json_schema_extra={"x-format": "duration"})
]
Size = Annotated[int, BeforeValidator(parse_size), Field(json_schema_extra={"x-format": "size"})]
#: a path in a config file, relative to the file's folder
ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


class ListenSettings(StrictModel):
    """Where a local HTTP endpoint listens; a package sets its own default port."""

    listen: str = Field(description="host:port (port 0: any free one)")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("listen must be host:port, e.g. 127.0.0.1:9108")
        return value

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class TlsSettings(StrictModel):
    """TLS towards a broker: the CA to trust, and optionally a client certificate."""

    ca_file: ConfigPath = Field(description="CA certificate(s) that signed the broker's cert")
    cert_file: ConfigPath | None = Field(None, description="client certificate (PEM)")
    key_file: ConfigPath | None = Field(None, description="client certificate's key (PEM)")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttClientSettings(StrictModel):
    """How a service reaches its MQTT broker: address, credentials, TLS, keepalive."""

    broker: str = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://host:port, or mqtts://host:port for TLS"
    )
    username: str | None = None
    password_file: ConfigPath | None = Field(
        None, description="file holding the MQTT password (kept out of the config)"
    )
    tls: TlsSettings | None = None
    keepalive: Duration = Field(30.0, description="MQTT keepalive")

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker must look like mqtt://host:port or mqtts://host:port")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(
                "broker is host and port only; credentials go in username and password_file"
            )
        _ = parts.port  # raises ValueError for a port out of range
        return value

    @model_validator(mode="after")
    def _tls_scheme(self) -> MqttClientSettings:
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
