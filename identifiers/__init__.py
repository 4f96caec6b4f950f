"""Industrial Internet identifiers (工业互联网标识): codec, registry node and caching client.

Public API::

    Identifier, parse, parse_prefix     the codec: ``88.<node>.<enterprise>/<suffix>``
    HandleValue, ValueData, AdminRef, HandleRecord, string_value
                                        Handle values and records (Handle.Net REST JSON)
    EnterpriseRecord, GatewayRecord, DeviceRecord, OeeSignals
                                        record templates, to values and back (OeeSignals:
                                        a device's GT_OEE value)
    NodeConfig                          the node's config file (``kind: identifiers``)
    Node                                a running node: registry + HTTP service (async CM)
    Registry                            the PostgreSQL registry and its write tokens
    Client                              resolves with referrals and cache; writes (async CM)

Exceptions::

    ValueError
    └── IdentifierError             malformed identifier text (.value, .part, .reason)
    HandleError                     a Handle response code other than success (.code, .handle)
    ├── ProtocolError               4: no such endpoint or method
    ├── HandleNotFound              100
    ├── HandleExists                101
    ├── InvalidHandle               102
    ├── ValuesNotFound              200
    ├── ValueExists                 201
    ├── InvalidValue                202
    ├── NotResponsible              301: the node neither serves the prefix nor knows who does
    │   └── ServiceReferral         302 (.referral: the node that serves the prefix)
    ├── ReferralError               301: referrals loop or go too deep
    ├── InsufficientPermissions     401: the token is for another prefix
    ├── AuthenticationNeeded        402: writing without a token
    ├── AuthenticationFailed        403: unknown, expired or revoked token
    └── ServerError                 2
    NodeUnavailable                 no node answered and nothing, not even stale, is cached

Only the codec and the exceptions load eagerly: ``gateway.protocol`` (a leaf that must stay
light) and ingest import this package for the codec, and must not pull in pydantic, FastAPI,
uvicorn, httpx or psycopg with it. Everything else loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from identifiers._codec import (
    MAX_HANDLE_BYTES,
    MAX_PREFIX_CHARS,
    Identifier,
    IdentifierError,
    parse,
    parse_prefix,
)
from identifiers._errors import (
    HTTP_STATUS,
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    HandleExists,
    HandleNotFound,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    NodeUnavailable,
    NotResponsible,
    ProtocolError,
    Referral,
    ReferralError,
    ServerError,
    ServiceReferral,
    ValueExists,
    ValuesNotFound,
)

if TYPE_CHECKING:
    from identifiers._client import BATCH_LIMIT, CacheStats, Client
    from identifiers._config import NodeConfig
    from identifiers._node import Node
    from identifiers._records import (
        DEFAULT_TTL,
        MAX_CACHE_TTL,
        NON_PUBLIC_TYPES,
        AdminRef,
        HandleRecord,
        HandleValue,
        ValueData,
        string_value,
    )
    from identifiers._service import create_app
    from identifiers._store import Registry, Token
    from identifiers._templates import (
        PUBKEY_INDEX,
        DeviceRecord,
        EnterpriseRecord,
        GatewayRecord,
        OeeSignals,
        usci_check_char,
    )

_LAZY = {
    "identifiers._client": ("BATCH_LIMIT", "CacheStats", "Client"),
    "identifiers._config": ("NodeConfig",),
    "identifiers._records": ("DEFAULT_TTL", "MAX_CACHE_TTL", "NON_PUBLIC_TYPES", "AdminRef",
                             "HandleRecord", "HandleValue", "ValueData", "string_value"),
    "identifiers._node": ("Node",),
    "identifiers._service": ("create_app",),
    "identifiers._store": ("Registry", "Token"),
    "identifiers._templates": ("PUBKEY_INDEX", "DeviceRecord", "EnterpriseRecord",
                               "GatewayRecord", "OeeSignals", "usci_check_char"),
}  # fmt: skip
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'identifiers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_TTL",
    "HTTP_STATUS",
    "MAX_CACHE_TTL",
    "MAX_HANDLE_BYTES",
    "MAX_PREFIX_CHARS",
    "NON_PUBLIC_TYPES",
    "PUBKEY_INDEX",
    "AdminRef",
    "AuthenticationFailed",
    "AuthenticationNeeded",
    "CacheStats",
    "Client",
    "DeviceRecord",
    "EnterpriseRecord",
    "GatewayRecord",
    "HandleError",
    "HandleExists",
    "HandleNotFound",
    "HandleRecord",
    "HandleValue",
    "Identifier",
    "IdentifierError",
    "InsufficientPermissions",
    "InvalidHandle",
    "InvalidValue",
    "Node",
    "NodeConfig",
    "NodeUnavailable",
    "NotResponsible",
    "OeeSignals",
    "ProtocolError",
    "Referral",
    "ReferralError",
    "Registry",
    "ServerError",
    "ServiceReferral",
    "Token",
    "ValueData",
    "ValueExists",
    "ValuesNotFound",
    "create_app",
    "parse",
    "parse_prefix",
    "string_value",
    "usci_check_char",
]
