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
    create_key, load_key            Ed25519 key files (owner-only, PKCS#8 PEM), and
    load_or_create_key, KeyFileError  the one made on first use
"""

import importlib
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
    from common._keys import KeyFileError, create_key, load_key, load_or_create_key

_LAZY = {
    "HttpServer": "_http",
    "KeyFileError": "_keys",
    "create_key": "_keys",
    "load_key": "_keys",
    "load_or_create_key": "_keys",
}


def __getattr__(name: str) -> Any:
    """``HttpServer`` loads uvicorn and the key helpers ``cryptography``: only on first use,
    so config loading stays light."""
    if name not in _LAZY:
        raise AttributeError(f"module 'common' has no attribute {name!r}")
    module = importlib.import_module(f"common.{_LAZY[name]}")
    value = globals()[name] = getattr(module, name)
    return value


__all__ = [
    "ConfigPath",
    "Duration",
    "HttpServer",
    "KeyFileError",
    "ListenSettings",
    "MqttClientSettings",
    "Size",
    "StrictModel",
    "TlsSettings",
    "create_key",
    "load_key",
    "load_or_create_key",
    "parse_duration",
    "parse_size",
]
