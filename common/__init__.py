"""What every service package shares: strict config building blocks and the local HTTP server.

A leaf: it imports nothing of ours, and every package may import it (docs/architecture.md).

Public API::

    StrictModel                     base of config models: unknown fields are errors, frozen
    Duration, parse_duration        "500ms", "2s", "5m", "1h", "7d" or seconds → seconds
    Size, parse_size                "1GiB", "500MB" or bytes → bytes
    ConfigPath                      a path relative to the config file (``base_dir`` context)
    ListenSettings                  ``listen: host:port`` of a local HTTP endpoint
    TlsSettings                     TLS towards a broker: CA, optional client certificate
    MqttClientSettings              broker URL, credentials, TLS, keepalive (validated)
    HttpServer                      serves an ASGI app on a bound socket (async context manager)
"""

from typing import TYPE_CHECKING, Any

from common._config import (
    ConfigPath,
    Duration,
    ListenSettings,
    MqttClientSettings,
    Size,
    StrictModel,
    TlsSettings,
    parse_duration,
    parse_size,
)

if TYPE_CHECKING:
    from common._http import HttpServer


def __getattr__(name: str) -> Any:
    """``HttpServer`` loads uvicorn: only on first use, so config loading stays light."""
    if name != "HttpServer":
        raise AttributeError(f"module 'common' has no attribute {name!r}")
    from common._http import HttpServer  # noqa: PLC0415

    globals()[name] = HttpServer
    return HttpServer


__all__ = [
    "ConfigPath",
    "Duration",
    "HttpServer",
    "ListenSettings",
    "MqttClientSettings",
    "Size",
    "StrictModel",
    "TlsSettings",
    "parse_duration",
    "parse_size",
]
