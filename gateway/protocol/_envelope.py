"""The envelope: what one gateway says about one device at a time, and its canonical bytes.

The canonical encoding (docs/protocol.md) is what is hashed into the chain and signed. It is a
plain length-prefixed binary layout, not a JSON text, so that it is byte-identical whatever
JSON library, float printer or key order a gateway in another language uses: the JSON form is
only a carrier, and a verifier rebuilds the canonical bytes from the decoded fields.

Construction validates everything once (field by field, naming the field), so an
:class:`Envelope` that exists is always encodable, whether built by a gateway or decoded.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property

import identifiers
from gateway.protocol._errors import EnvelopeTooLarge, MalformedEnvelope

VERSION = 1
#: the hash a gateway's first envelope names as its predecessor
GENESIS = bytes(32)
MAGIC = b"guantong-envelope\x00"

MAX_SAMPLES = 10_000
MAX_TAG_BYTES = 255
MAX_TEXT_BYTES = 4096
MAX_REASON_BYTES = 1024
MAX_SEQ = 2**63 - 1
#: sample and creation times must lie in [2000-01-01, 2100-01-01) UTC, in microseconds
MIN_TS = 946_684_800_000_000
MAX_TS = 4_102_444_800_000_000
#: integers beyond this are not exact as a double, the type every number travels as
MAX_EXACT_INT = 2**53

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BB")  # version, kind
_CHAIN = struct.Struct(">Q32sqI")  # seq, prev, created, sample count
_SAMPLE_TS = struct.Struct(">qBB")  # ts, quality, value type
_NUMBER_SAMPLE = struct.Struct(">qBBd")  # ts, quality, value type, the double
_BOOL_SAMPLE = struct.Struct(">qBBB")
_LOSS = struct.Struct(">QQQ")  # first, last, samples
_CHECKPOINT = struct.Struct(">qqQ32sBI")  # from, to, previous, previous hash, restarted, periods
_PERIOD = struct.Struct(">qqI")  # from, to, count of counts
_U64 = struct.Struct(">Q")


class Quality(enum.IntEnum):
    """OPC UA's three severities; every sample has one."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Kind(enum.IntEnum):
    """What an envelope carries: samples of one device, a declaration of dropped envelopes, or
    the gateway's attestation of what it accepted in a period (a checkpoint)."""

    DATA = 1
    LOSS = 2
    CHECKPOINT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


# value type codes of the canonical encoding
_NULL, _NUMBER, _BOOL, _TEXT = 0, 1, 2, 3

Value = float | int | bool | str | None


@dataclass(frozen=True, slots=True)
class Sample:
    """One timestamped value of a tag. ``ts`` is microseconds since the Unix epoch, UTC.

    Numbers travel as IEEE-754 doubles; an integer is accepted if a double holds it exactly.
    NaN and infinities cannot be carried: such a reading travels as ``None`` with a quality
    other than GOOD. Validation happens when the sample is put into an :class:`Envelope`.
    """

    tag: str
    ts: int
    value: Value
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Loss:
    """Envelopes ``first``..``last`` (inclusive) were dropped by the gateway, and why."""

    first: int
    last: int
    samples: int
    reason: str


@dataclass(frozen=True, slots=True)
class Count:
    """``samples`` of the series (``device``, ``tag``) had a time in the period."""

    device: str
    tag: str
    samples: int


@dataclass(frozen=True, slots=True)
class Period:
    """Counts of the samples whose ``ts`` lies in ``[start, end)``, sorted by (device, tag)."""

    start: int
    end: int
    counts: tuple[Count, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The gateway attests what it accepted into its outbox, per series and sample-time period.

    A *closing* checkpoint (``start < end``) closes the time ``[start, end)``: every sample
    with a ``ts`` before ``end`` that the gateway accepted since the previous closing
    checkpoint is counted in one of its ``periods`` (the period ``[start, end)`` itself, and
    earlier ones for samples that came late) or in the *partial* checkpoints directly before
    it. A partial checkpoint (``start == end``, the ``end`` of the closing one that follows)
    carries counts that did not fit in one checkpoint and closes no time itself. ``previous``
    and ``previous_hash`` name the gateway's previous checkpoint of either kind (0 and
    :data:`GENESIS` for none), so checkpoints form a verifiable sequence without the
    envelopes between them. ``restarted``: the gateway started since the previous checkpoint.
    """

    start: int
    end: int
    previous: int
    previous_hash: bytes
    restarted: bool
    periods: tuple[Period, ...] = ()

    @property
    def samples(self) -> int:
        return sum(c.samples for period in self.periods for c in period.counts)

    @property
    def partial(self) -> bool:
        """Counts that did not fit in the closing checkpoint of ``end``, which follows."""
        return self.start == self.end


@dataclass(frozen=True)
class Envelope:
    """A gateway's statement, chained to its previous one by ``prev`` and numbered by ``seq``."""

    gateway: str
    seq: int
    prev: bytes
    created: int
    device: str | None = None
    samples: tuple[Sample, ...] = ()
    loss: Loss | None = None
    checkpoint: Checkpoint | None = None
    version: int = field(default=VERSION)

    def __post_init__(self) -> None:
        _check_identifier("gateway", self.gateway)
        if self.version != VERSION:
            raise MalformedEnvelope("v", f"only version {VERSION} can be built")
        _check_int("seq", self.seq, 1, MAX_SEQ)
        if not isinstance(self.prev, bytes) or len(self.prev) != 32:
            raise MalformedEnvelope("prev", "must be 32 bytes (a SHA-256 digest)")
        _check_int("created", self.created, MIN_TS, MAX_TS - 1)
        if self.checkpoint is not None:
            self._check_checkpoint(self.checkpoint)
        elif self.loss is None:
            self._check_data()
        else:
            self._check_loss(self.loss)

    def _check_data(self) -> None:
        if self.device is None:
            raise MalformedEnvelope("device", "a data envelope names its device")
        _check_identifier("device", self.device)
        if identifiers.parse(self.device).prefix != identifiers.parse(self.gateway).prefix:
            raise MalformedEnvelope("device", "is not under the gateway's firm prefix")
        if not isinstance(self.samples, tuple):
            raise MalformedEnvelope("samples", "must be a tuple")
        if not self.samples:
            raise MalformedEnvelope("samples", "a data envelope carries at least one sample")
        if len(self.samples) > MAX_SAMPLES:
            raise EnvelopeTooLarge("samples", len(self.samples), MAX_SAMPLES)
        _check_samples(self.samples)

    def _check_loss(self, loss: Loss) -> None:
        if self.device is not None or self.samples:
            raise MalformedEnvelope("loss", "a loss envelope has no device and no samples")
        if not isinstance(loss, Loss):
            raise MalformedEnvelope("loss", "must be a Loss")
        _check_int("loss.first", loss.first, 1, MAX_SEQ)
        _check_int("loss.last", loss.last, loss.first, self.seq - 1)
        _check_int("loss.samples", loss.samples, 0, MAX_SEQ)
        _check_text("loss.reason", loss.reason, MAX_REASON_BYTES, allow_empty=False)

    def _check_checkpoint(self, cp: Checkpoint) -> None:
        if self.device is not None or self.samples or self.loss is not None:
            raise MalformedEnvelope("checkpoint", "a checkpoint has no device, samples or loss")
        if not isinstance(cp, Checkpoint):
            raise MalformedEnvelope("checkpoint", "must be a Checkpoint")
        _check_int("checkpoint.from", cp.start, MIN_TS, MAX_TS - 1)
        _check_int("checkpoint.to", cp.end, cp.start, MAX_TS)
        _check_int("checkpoint.previous", cp.previous, 0, self.seq - 1)
        if not isinstance(cp.previous_hash, bytes) or len(cp.previous_hash) != 32:
            raise MalformedEnvelope("checkpoint.previous_hash", "must be 32 bytes")
        if cp.previous == 0 and cp.previous_hash != GENESIS:
            raise MalformedEnvelope("checkpoint.previous_hash", "must be zeros without previous")
        if type(cp.restarted) is not bool:
            raise MalformedEnvelope("checkpoint.restarted", "must be true or false")
        if not isinstance(cp.periods, tuple):
            raise MalformedEnvelope("checkpoint.periods", "must be a tuple")
        if cp.partial and not cp.periods:
            raise MalformedEnvelope("checkpoint.periods", "a partial checkpoint holds counts")
        prefix = identifiers.parse(self.gateway).prefix
        end, total = MIN_TS, 0
        for i, period in enumerate(cp.periods):
            where = f"checkpoint.periods[{i}]"
            if not isinstance(period, Period):
                raise MalformedEnvelope(where, "must be a Period")
            _check_int(f"{where}.from", period.start, end, cp.end - 1)
            _check_int(f"{where}.to", period.end, period.start + 1, cp.end)
            end = period.end
            if not isinstance(period.counts, tuple) or not period.counts:
                raise MalformedEnvelope(f"{where}.counts", "must be a non-empty tuple")
            total += len(period.counts)
            if total > MAX_SAMPLES:
                raise EnvelopeTooLarge("checkpoint.periods", total, MAX_SAMPLES)
            _check_counts(where, period.counts, prefix)

    @property
    def kind(self) -> Kind:
        if self.checkpoint is not None:
            return Kind.CHECKPOINT
        return Kind.DATA if self.loss is None else Kind.LOSS

    @cached_property
    def canonical(self) -> bytes:
        """The bytes that are hashed and signed (docs/protocol.md, "Canonical encoding")."""
        out = [MAGIC, _HEAD.pack(self.version, self.kind), _string(self.gateway)]
        out.append(_string(self.device or ""))
        out.append(_CHAIN.pack(self.seq, self.prev, self.created, len(self.samples)))
        tags, append = _TAGS, out.append
        for s in self.samples:
            append(tags.get(s.tag) or _string(s.tag))
            value = s.value
            kind = type(value)
            if kind is float or kind is int:
                append(_NUMBER_SAMPLE.pack(s.ts, s.quality, _NUMBER, value))
            elif value is None:
                append(_SAMPLE_TS.pack(s.ts, s.quality, _NULL))
            elif kind is bool:
                append(_BOOL_SAMPLE.pack(s.ts, s.quality, _BOOL, value))
            else:
                encoded = value.encode()  # type: ignore[union-attr]
                append(_SAMPLE_TS.pack(s.ts, s.quality, _TEXT))
                append(_U32.pack(len(encoded)))
                append(encoded)
        if self.loss is not None:
            out.append(_LOSS.pack(self.loss.first, self.loss.last, self.loss.samples))
            out.append(_string(self.loss.reason))
        if self.checkpoint is not None:
            _checkpoint_bytes(self.checkpoint, out)
        return b"".join(out)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the canonical bytes: what the next envelope names as ``prev``."""
        return hashlib.sha256(self.canonical).digest()


def _checkpoint_bytes(cp: Checkpoint, out: list[bytes]) -> None:
    out.append(
        _CHECKPOINT.pack(
            cp.start, cp.end, cp.previous, cp.previous_hash, cp.restarted, len(cp.periods)
        )
    )
    for period in cp.periods:
        out.append(_PERIOD.pack(period.start, period.end, len(period.counts)))
        for count in period.counts:
            out += (_string(count.device), _string(count.tag), _U64.pack(count.samples))


def _check_counts(where: str, counts: tuple[Count, ...], prefix: str) -> None:
    """Each count names a device of the gateway's firm and a tag, once, in (device, tag) order."""
    last: tuple[str, str] | None = None
    for j, count in enumerate(counts):
        here = f"{where}.counts[{j}]"
        if not isinstance(count, Count):
            raise MalformedEnvelope(here, "must be a Count")
        _check_identifier(f"{here}.device", count.device)
        if identifiers.parse(count.device).prefix != prefix:
            raise MalformedEnvelope(f"{here}.device", "is not under the gateway's firm prefix")
        if type(count.tag) is not str or count.tag not in _TAGS:
            _learn_tag(f"{here}.tag", count.tag)
        _check_int(f"{here}.samples", count.samples, 1, MAX_SEQ)
        key = (count.device, count.tag)
        if last is not None and key <= last:
            raise MalformedEnvelope(here, "counts must be sorted by (device, tag), each once")
        last = key


def _string(text: str) -> bytes:
    encoded = text.encode()
    return _U16.pack(len(encoded)) + encoded


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise MalformedEnvelope(name, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise MalformedEnvelope(name, f"{value} is outside [{low}, {high}]")


def _check_text(name: str, value: object, limit: int, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise MalformedEnvelope(name, f"must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise MalformedEnvelope(name, "is empty")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise MalformedEnvelope(name, "is not valid Unicode (lone surrogate)") from None
    if size > limit:
        raise EnvelopeTooLarge(name, size, limit)


def _check_identifier(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise MalformedEnvelope(name, f"must be a string, not {type(value).__name__}")
    try:
        parsed = identifiers.parse(value)
    except identifiers.IdentifierError as exc:
        raise MalformedEnvelope(name, f"{exc.part}: {exc.reason}") from None
    if str(parsed) != value:
        raise MalformedEnvelope(name, f"is not in normal form (expected {str(parsed)!r})")


#: tag names already checked, with their canonical bytes: tags repeat in every envelope of a
#: device, and checking and encoding each anew is a large part of decoding
_TAGS: dict[str, bytes] = {}
_MAX_TAGS = 200_000
#: value types that need no check beyond their type (int and float are checked on the spot)
_PLAIN = frozenset((int, float, bool, type(None)))


def _check_samples(samples: tuple[Sample, ...]) -> None:
    """Every sample, in one tight loop: this is most of the cost of decoding an envelope."""
    tags = _TAGS
    for i, sample in enumerate(samples):
        if type(sample) is not Sample:
            raise MalformedEnvelope(f"samples[{i}]", "must be a Sample")
        tag, ts, value = sample.tag, sample.ts, sample.value
        if type(tag) is not str or tag not in tags:
            _learn_tag(f"samples[{i}].tag", tag)
        if type(ts) is not int or not MIN_TS <= ts < MAX_TS:
            _check_int(f"samples[{i}].ts", ts, MIN_TS, MAX_TS - 1)
        if type(sample.quality) is not Quality:
            raise MalformedEnvelope(f"samples[{i}].quality", "must be a Quality")
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                _check_value(i, value)
        elif (kind is int and abs(value) > MAX_EXACT_INT) or kind not in _PLAIN:  # type: ignore[arg-type]
            _check_value(i, value)


def _learn_tag(where: str, tag: object) -> None:
    _check_text(where, tag, MAX_TAG_BYTES, allow_empty=False)
    if _CONTROL.search(tag):  # type: ignore[arg-type]
        raise MalformedEnvelope(where, "contains a control character")
    if len(_TAGS) < _MAX_TAGS:
        _TAGS[tag] = _string(tag)  # type: ignore[index,arg-type]


def _check_value(i: int, value: object) -> None:
    """Raise for a sample value the contract cannot carry (called only for the unusual ones)."""
    where = f"samples[{i}].value"
    if isinstance(value, str):
        _check_text(where, value, MAX_TEXT_BYTES, allow_empty=True)
    elif type(value) is int:
        if abs(value) > MAX_EXACT_INT:
            raise MalformedEnvelope(where, f"{value} is not exact as a double: send it as text")
    elif type(value) is float:
        if not math.isfinite(value):
            raise MalformedEnvelope(where, f"{value} cannot be carried: send None, not GOOD")
    else:
        raise MalformedEnvelope(where, f"type {type(value).__name__} is not allowed")
