"""What the metrics say about one firm in one window: plain frozen dataclasses.

Times are timezone-aware ``datetime`` in UTC; durations and ages are seconds. A ``None``
means "cannot be said from the data" (no expected interval known, no envelope to measure),
never zero.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from evidence._errors import InvalidWindow


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end)``; both timezone-aware."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise InvalidWindow("window times must carry a timezone")
        if self.end <= self.start:
            raise InvalidWindow(f"window end {self.end} is not after its start {self.start}")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Params:
    """The knobs of the definitions (docs/evidence.md); every report states the ones it used.

    ``expected_interval``: seconds between samples of every tag; ``None`` takes each tag's
    median spacing over its last ``interval_samples`` samples before the window's end.
    ``fresh_within``: a device is networked only if its newest good sample is at most this
    old at ``as_of``. ``outage_after``: a gateway silent for longer than this was out.
    """

    expected_interval: float | None = None
    interval_samples: int = 1000
    fresh_within: float = 300.0
    outage_after: float = 60.0

    def __post_init__(self) -> None:
        if self.expected_interval is not None and self.expected_interval <= 0:
            raise ValueError("expected_interval must be positive")
        if self.interval_samples < 2:
            raise ValueError("interval_samples must be at least 2")
        if self.fresh_within <= 0 or self.outage_after <= 0:
            raise ValueError("fresh_within and outage_after must be positive")


@dataclass(frozen=True, slots=True)
class TagEvidence:
    device: str
    tag: str
    samples: int
    #: seconds; from ``Params.expected_interval`` or the tag's median spacing
    expected_interval: float | None
    interval_source: str | None  # "parameter", "median" or None
    expected_samples: float | None
    completeness: float | None
    last_sample: dt.datetime | None
    last_good: dt.datetime | None
    age: float | None  # seconds from the newest sample to ``as_of``


@dataclass(frozen=True, slots=True)
class OeeEvidence:
    """OEE of one device in the window, from the tags its record declares (``GT_OEE``).

    Seconds and parts are taken over the tags' observed stretches: between two consecutive
    good samples at most ``Params.outage_after`` apart, or 1.5 × the tag's expected
    interval if longer (docs/evidence.md, OEE). Parts are a
    counter's increases, a decrease (reset, wrap) counting as none. A factor is None when it
    cannot be computed; ``missing`` says why.
    """

    observed_seconds: float
    planned_seconds: float
    running_seconds: float
    total: int | None  # parts made
    good: int | None  # good parts: the good counter, or total − defects
    ideal_cycle: float | None  # seconds per part at the rated speed, as declared
    availability: float | None  # running / planned
    performance: float | None  # ideal_cycle × total / running
    quality: float | None  # good / total
    oee: float | None  # availability × performance × quality
    #: decreases of a counter in the window (a reset or a wrap), counted as no parts
    counter_resets: int = 0
    missing: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    identifier: str
    gateway: str | None
    registered: bool
    key_equipment: bool
    stages: tuple[str, ...]
    tags: int
    samples: int
    expected_samples: float | None
    completeness: float | None
    last_sample: dt.datetime | None
    last_good: dt.datetime | None
    age: float | None
    #: good data in the window, the newest no older than ``fresh_within`` at ``as_of``
    networked: bool
    #: stages some of its tags serve, from its record: stage → tag names
    tag_stages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: its OEE in the window, if its record declares the signals (``GT_OEE``)
    oee: OeeEvidence | None = None


@dataclass(frozen=True, slots=True)
class Latency:
    """Seconds from an envelope's creation at the gateway to its receipt by ingest."""

    envelopes: int
    p50: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class Outage:
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Integrity:
    """Of the envelopes created in the window (quarantine: received in the window)."""

    envelopes: int  # receipts of every kind, each signature verified
    data_envelopes: int
    valid_signatures: int
    bad_signatures: int  # quarantined as ``bad_signature``
    #: valid / (valid + bad); None without any envelope
    signature_share: float | None
    gaps: int  # gap events: envelopes missing when a later one arrived
    missing_envelopes: int  # seqs between the first and last of the window still absent
    declared_losses: int  # loss envelopes
    #: envelopes the losses declared that never arrived (a declared envelope the outbox had
    #: sent before it dropped it, and that ingest received, is not lost), and their samples
    declared_lost_envelopes: int
    declared_lost_samples: int
    undeclared_missing: int  # missing and not covered by a declared loss
    chain_breaks: int
    quarantined: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GatewayEvidence:
    identifier: str
    envelopes: int
    first_created: dt.datetime | None
    last_created: dt.datetime | None
    online_seconds: float
    outages: tuple[Outage, ...]
    latency: Latency
    integrity: Integrity


@dataclass(frozen=True, slots=True)
class Networking:
    """生产设备联网率 over key equipment: networked key devices / registered key devices."""

    key_registered: int
    key_networked: int
    rate: float | None


@dataclass(frozen=True, slots=True)
class StageCoverage:
    """A business stage and the devices that serve it, as a whole or through some of their tags.

    ``networked``: those of them whose data for the stage is fresh: the device is networked
    (for a stage of the device), or one of the stage's tags has a good sample no older than
    ``fresh_within`` (for a stage only some tags serve). Automatic collection: at least one.
    """

    stage: str
    devices: int
    networked: int

    @property
    def automatic(self) -> bool:
        return self.networked > 0


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A device that delivered data whose identifier record does not vouch for that delivery.

    ``reason``: ``no_record`` (no device record naming this firm was read for it: none at all,
    or one naming another firm) or ``other_gateway`` (its record names ``registered_gateway``,
    not the gateway(s) that delivered).
    """

    device: str
    reason: str
    delivered_by: tuple[str, ...]
    registered_gateway: str | None


@dataclass(frozen=True, slots=True)
class IdentifierCoverage:
    """Of the devices that delivered data for the firm in the window, those whose identifier
    record names the firm and the gateway that delivered it: the registry vouches for what the
    store holds, so an evaluator resolving the identifiers finds the same plant."""

    delivering: int
    matched: int
    rate: float | None  # matched / delivering; None if nothing was delivered
    unmatched: tuple[Unmatched, ...] = ()


@dataclass(frozen=True, slots=True)
class FirmEvidence:
    firm: str
    window: Window
    as_of: dt.datetime
    params: Params
    devices: tuple[DeviceEvidence, ...]
    tags: tuple[TagEvidence, ...]
    gateways: tuple[GatewayEvidence, ...]
    networking: Networking
    stages: tuple[StageCoverage, ...]
    latency: Latency
    integrity: Integrity
    identifier_coverage: IdentifierCoverage

    def device(self, identifier: str) -> DeviceEvidence:
        for dev in self.devices:
            if dev.identifier == identifier:
                return dev
        raise KeyError(identifier)

    def gateway(self, identifier: str) -> GatewayEvidence:
        for gw in self.gateways:
            if gw.identifier == identifier:
                return gw
        raise KeyError(identifier)

    def stage(self, name: str) -> StageCoverage | None:
        return next((s for s in self.stages if s.stage == name), None)
