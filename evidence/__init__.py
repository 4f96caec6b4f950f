"""Evidence: what the store shows about a firm's data connectivity, and which indicator items
of the SME digitalization level assessment (2024 edition) those facts support.

Metrics are computed in SQL over the ingest store, per firm and window; the firm's device
records (key equipment, business stages) come from its identifier records. docs/evidence.md
defines every metric and the mapping, and says what they cannot show.

Public API::

    Window, Params                  the window ``[start, end)`` and the definitions' knobs
    RegisteredDevice                a device record's facts: gateway, key equipment, stages
    registered_devices              the firm's device records, through an identifiers.Client
    collect                         the metrics of a firm and window (blocking psycopg)
    FirmEvidence, DeviceEvidence, TagEvidence, GatewayEvidence, Networking, StageCoverage,
    Latency, Integrity, Outage, IdentifierCoverage, Unmatched, OeeEvidence
                                    what collect returns
    load_indicators, Indicators     the versioned indicator file, validated
    INDICATORS_2024                 the path of the 2024 file
    assess, Assessment, ItemSupport which items the evidence supports, and how strongly
    STRENGTHS                       none < weak < partial < strong
    EvidenceConfig                  the service's config file (``kind: evidence``)
    Service                         the API and web page over the store (async context manager)
    new_token, digest               a token's secret and the SHA-256 the config holds
    build_report, Report            the signed report: facts, assessment, gateways' checkpoints
    render_html                     its HTML rendering (Chinese labels first)
    verify_report, Verification, Finding   check a report with only the gateways' keys
    gateway_keys                    those keys, resolved from the gateways' identifier records

Exceptions::

    Exception
    └── EvidenceError
        ├── InvalidWindow           (also a ValueError) empty, reversed or naive window
        ├── StoreUnavailable        the ingest store cannot be read
        ├── RegistryError           the firm's device records cannot be read (.firm)
        ├── IndicatorFileError      an invalid indicator file (.path, .problems)
        ├── AccessDenied            the API refuses a token (.status 401 or 403, .reason)
        └── ReportError             (also a ValueError) not a report file (.where, .reason)
"""

from typing import TYPE_CHECKING, Any

from evidence._access import digest, new_token
from evidence._config import EvidenceConfig
from evidence._errors import (
    AccessDenied,
    EvidenceError,
    IndicatorFileError,
    InvalidWindow,
    RegistryError,
    ReportError,
    StoreUnavailable,
)
from evidence._html import render_html
from evidence._mapping import (
    INDICATORS_2024,
    STRENGTHS,
    Assessment,
    Indicators,
    ItemSupport,
    assess,
    load_indicators,
)
from evidence._metrics import collect
from evidence._models import (
    DeviceEvidence,
    FirmEvidence,
    GatewayEvidence,
    IdentifierCoverage,
    Integrity,
    Latency,
    Networking,
    OeeEvidence,
    Outage,
    Params,
    StageCoverage,
    TagEvidence,
    Unmatched,
    Window,
)
from evidence._registry import RegisteredDevice, registered_devices
from evidence._report import Report, build_report
from evidence._verifier import Finding, Verification, gateway_keys, verify_report

if TYPE_CHECKING:
    from evidence._service import Service


def __getattr__(name: str) -> Any:
    """``Service`` loads fastapi and uvicorn: only on first use, so config loading stays light."""
    if name != "Service":
        raise AttributeError(f"module 'evidence' has no attribute {name!r}")
    from evidence._service import Service  # noqa: PLC0415

    globals()[name] = Service
    return Service


__all__ = [
    "INDICATORS_2024",
    "STRENGTHS",
    "AccessDenied",
    "Assessment",
    "DeviceEvidence",
    "EvidenceConfig",
    "EvidenceError",
    "Finding",
    "FirmEvidence",
    "GatewayEvidence",
    "IdentifierCoverage",
    "IndicatorFileError",
    "Indicators",
    "Integrity",
    "InvalidWindow",
    "ItemSupport",
    "Latency",
    "Networking",
    "OeeEvidence",
    "Outage",
    "Params",
    "RegisteredDevice",
    "RegistryError",
    "Report",
    "ReportError",
    "Service",
    "StageCoverage",
    "StoreUnavailable",
    "TagEvidence",
    "Unmatched",
    "Verification",
    "Window",
    "assess",
    "build_report",
    "collect",
    "digest",
    "gateway_keys",
    "load_indicators",
    "new_token",
    "registered_devices",
    "render_html",
    "verify_report",
]
