"""Sparkplug B 3.0: the topic namespace, the payload codec, and signed envelopes inside it.

::

    spBv1.0/<group>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge node>
    spBv1.0/<group>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge node>/<device>

A gateway is an edge node; its edge node id is its identifier's suffix and a device id is the
device's suffix, both escaped as in the ``gt/v1`` scheme (``%``, ``/``, ``+``, ``#``), so an id
is always one topic level. The group defaults to the firm prefix.

The signed envelope travels whole: a DDATA (data) or NDATA (loss declaration or checkpoint)
payload carries the envelope's JSON form, byte for byte as the gateway committed it, in
``body``, with ``uuid`` :data:`SPARKPLUG_ENVELOPE_UUID`; its metrics repeat the samples for
SCADA hosts and are not signed. :func:`decode_sparkplug_envelope` is what ingest calls.
docs/protocol.md, "Sparkplug B", is the specification.

Integers: the specification stores Int8, Int16 and Int32 in a ``uint32`` without saying how a
negative value is laid out, and implementations differ (Eclipse Tahu sign-extends to 32 bits,
pysparkplug uses the type's own width). This codec emits 32-bit two's complement and decodes
both forms; anything else is refused as out of range. Likewise UInt32 is written in
``int_value`` as the specification says, and read from ``long_value`` too, where Eclipse
Tahu's libraries and Ignition have long put it.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

import identifiers
from gateway.protocol._envelope import Envelope
from gateway.protocol._errors import EnvelopeTooLarge, MalformedEnvelope, TopicError
from gateway.protocol._json import MAX_PAYLOAD_BYTES, decode_json
from gateway.protocol._signing import SignedEnvelope
from gateway.protocol._topics import _escape

SPARKPLUG_NAMESPACE = "spBv1.0"
#: what ingest subscribes to: the messages that carry envelopes, and not a host's ``STATE``
SPARKPLUG_SUBSCRIPTIONS = (f"{SPARKPLUG_NAMESPACE}/+/DDATA/+/+", f"{SPARKPLUG_NAMESPACE}/+/NDATA/+")
#: ``uuid`` of a payload whose ``body`` is a signed envelope in its JSON form
SPARKPLUG_ENVELOPE_UUID = "guantong-envelope-json-v1"
#: a Sparkplug payload carrying more than this is refused before it is parsed: room for the
#: envelope (at most 1 MiB) and its samples repeated as metrics, text values included
MAX_SPARKPLUG_BYTES = 4 * MAX_PAYLOAD_BYTES
SPARKPLUG_BDSEQ = "bdSeq"
SPARKPLUG_REBIRTH = "Node Control/Rebirth"
#: the values of the ``Quality`` property (Sparkplug 3.0, "Quality Codes")
SPARKPLUG_QUALITY_BAD, SPARKPLUG_QUALITY_GOOD, SPARKPLUG_QUALITY_STALE = 0, 192, 500

_QUALITIES = (SPARKPLUG_QUALITY_BAD, SPARKPLUG_QUALITY_GOOD, SPARKPLUG_QUALITY_STALE)
_U32, _U64 = 2**32, 2**64
_F32 = struct.Struct("<f")


class SparkplugMessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"

    @property
    def for_device(self) -> bool:
        return self.value[0] == "D"


class SparkplugDataType(enum.IntEnum):
    """Sparkplug's datatypes; this codec carries the scalar ones (up to ``FILE``, not
    ``DATASET``), and refuses DataSet, Template, property-set and array values."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


# datatype → the protobuf field of the value oneof that carries it
_FIELD_OF = {
    SparkplugDataType.INT8: "int_value",
    SparkplugDataType.INT16: "int_value",
    SparkplugDataType.INT32: "int_value",
    SparkplugDataType.UINT8: "int_value",
    SparkplugDataType.UINT16: "int_value",
    SparkplugDataType.UINT32: "int_value",
    SparkplugDataType.INT64: "long_value",
    SparkplugDataType.UINT64: "long_value",
    SparkplugDataType.DATETIME: "long_value",
    SparkplugDataType.FLOAT: "float_value",
    SparkplugDataType.DOUBLE: "double_value",
    SparkplugDataType.BOOLEAN: "boolean_value",
    SparkplugDataType.STRING: "string_value",
    SparkplugDataType.TEXT: "string_value",
    SparkplugDataType.UUID: "string_value",
    SparkplugDataType.BYTES: "bytes_value",
    SparkplugDataType.FILE: "bytes_value",
}
_T = SparkplugDataType
# signed types kept in int_value → their width in bits; unsigned ones → their limit
_SIGNED32 = {_T.INT8: 8, _T.INT16: 16, _T.INT32: 32}
_UNSIGNED = {_T.UINT8: 2**8, _T.UINT16: 2**16, _T.UINT32: 2**32}

Value = int | float | bool | str | bytes | None


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed topic; ``device`` is set for the D… message types and only for them."""

    group: str
    type: SparkplugMessageType
    edge_node: str
    device: str | None = None

    def __str__(self) -> str:
        tail = "" if self.device is None else f"/{self.device}"
        return f"{SPARKPLUG_NAMESPACE}/{self.group}/{self.type}/{self.edge_node}{tail}"


def _check_id(topic: str, what: str, value: str) -> None:
    if not value or any(ch in value for ch in "+/#"):
        raise TopicError(topic, f"{what} {value!r} must be non-empty, without '+', '/' or '#'")


def sparkplug_topic(
    group: str, type: SparkplugMessageType, edge_node: str, device: str | None = None
) -> str:
    """The topic of a message; raise :class:`TopicError` for an id Sparkplug does not allow."""
    topic = SparkplugTopic(group, SparkplugMessageType(type), edge_node, device)
    for what, value in (("group", group), ("edge node", edge_node), ("device", device)):
        if value is not None:
            _check_id(str(topic), what, value)
    parse_sparkplug_topic(str(topic))
    return str(topic)


def parse_sparkplug_topic(topic: str) -> SparkplugTopic:
    """Split an edge node's topic (not ``STATE``); raise :class:`TopicError` for anything else."""
    levels = topic.split("/")
    if levels[0] != SPARKPLUG_NAMESPACE or len(levels) not in (4, 5):
        raise TopicError(topic, f"not {SPARKPLUG_NAMESPACE}/<group>/<type>/<edge node>[/<device>]")
    try:
        kind = SparkplugMessageType(levels[2])
    except ValueError:
        raise TopicError(topic, f"unknown message type {levels[2]!r}") from None
    if kind.for_device != (len(levels) == 5):
        need = "names" if kind.for_device else "has no"
        raise TopicError(topic, f"a {kind} topic {need} a device")
    for what, value in zip(("group", "type", "edge node", "device"), levels[1:], strict=False):
        _check_id(topic, what, value)
    return SparkplugTopic(levels[1], kind, levels[3], levels[4] if len(levels) == 5 else None)


def sparkplug_edge_node(gateway: str) -> str:
    """A gateway's edge node id: its identifier's suffix, escaped to one topic level."""
    return _escape(identifiers.parse(gateway).suffix)


def sparkplug_device(device: str) -> str:
    return _escape(identifiers.parse(device).suffix)


@functools.cache
def _pb() -> Any:
    """The protobuf ``Payload`` class, built on first use: a gateway or ingest that only
    speaks JSON does not pay for it at import."""
    from gateway.protocol._sparkplug_pb import Payload  # noqa: PLC0415

    return Payload


# -- the payload model ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SparkplugMetric:
    """One metric. ``value`` None is a null (``is_null``); ``timestamp`` is ms since the epoch;
    ``quality`` is the ``Quality`` property (``SPARKPLUG_QUALITY_BAD``, ``_GOOD``, ``_STALE``),
    None when absent (good). Without ``datatype`` (allowed in DATA messages) an integer value is
    the unsigned number on the wire."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: SparkplugDataType | None = None
    value: Value = None
    is_historical: bool = False
    is_transient: bool = False
    quality: int | None = None


@dataclass(frozen=True, slots=True)
class SparkplugPayload:
    timestamp: int | None = None
    metrics: tuple[SparkplugMetric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


def encode_sparkplug(payload: SparkplugPayload) -> bytes:
    """The protobuf bytes; raise :class:`MalformedEnvelope` for a value its datatype cannot
    hold (naming the metric)."""
    out = _pb()()
    if payload.timestamp is not None:
        out.timestamp = payload.timestamp
    if payload.seq is not None:
        out.seq = payload.seq
    if payload.uuid is not None:
        out.uuid = payload.uuid
    if payload.body is not None:
        out.body = payload.body
    for i, metric in enumerate(payload.metrics):
        _encode_metric(f"metrics[{i}]", metric, out.metrics.add())
    return out.SerializeToString()


def _encode_metric(where: str, metric: SparkplugMetric, out: Any) -> None:
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = metric.alias
    if metric.timestamp is not None:
        out.timestamp = metric.timestamp
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.quality is not None:
        out.properties.keys.append("Quality")
        out.properties.values.add(type=SparkplugDataType.INT32, int_value=metric.quality)
    datatype = metric.datatype
    if datatype is not None:
        out.datatype = datatype
    if metric.value is None:
        out.is_null = True
        return
    if datatype is None:
        raise MalformedEnvelope(f"{where}.datatype", "a value is encoded by its datatype")
    field = _FIELD_OF.get(datatype)
    if field is None:
        raise MalformedEnvelope(f"{where}.datatype", f"{datatype.name} is not supported")
    try:
        setattr(out, field, _to_wire(datatype, metric.value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedEnvelope(
            f"{where}.value", f"{metric.value!r} is not a {datatype.name}: {exc}"
        ) from None


def _to_wire(datatype: SparkplugDataType, value: Value) -> Value:
    if _field_is_int(datatype):
        if type(value) is not int:
            raise TypeError("not an int")
        return _int_to_wire(datatype, value)
    if datatype in (_T.FLOAT, _T.DOUBLE):
        if type(value) not in (int, float):
            raise TypeError("not a number")
        number = float(value)  # type: ignore[arg-type]
        if datatype is _T.FLOAT and math.isfinite(number):
            _F32.pack(number)  # OverflowError beyond float32's range
        return number
    expected = {_T.BOOLEAN: bool, _T.BYTES: bytes, _T.FILE: bytes}.get(datatype, str)
    if type(value) is not expected:
        raise TypeError(f"not a {expected.__name__}")
    return value


def _int_to_wire(datatype: SparkplugDataType, value: int) -> int:
    if datatype in _SIGNED32:
        bits = _SIGNED32[datatype]
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1)
    elif datatype is _T.INT64:
        low, high = -(2**63), 2**63
    else:
        low, high = 0, _UNSIGNED.get(datatype, _U64)
    if not low <= value < high:
        raise ValueError("out of range")
    return value % (_U64 if datatype is _T.INT64 else _U32) if value < 0 else value


def _field_is_int(datatype: SparkplugDataType) -> bool:
    return _FIELD_OF.get(datatype) in ("int_value", "long_value")


def decode_sparkplug(raw: bytes) -> SparkplugPayload:
    """Parse and check a Sparkplug B payload; raise a :class:`ProtocolError` naming the field.

    Refused: not protobuf, over :data:`MAX_SPARKPLUG_BYTES`, text that is not UTF-8, a datatype
    outside the specification or that this codec does not carry, a value in another field than
    its datatype's, an integer out of its datatype's range, a ``Quality`` property that is not
    an Int32 0, 192 or 500, property keys and values of different counts, a metric with
    neither a value nor ``is_null``.
    """
    if len(raw) > MAX_SPARKPLUG_BYTES:
        raise EnvelopeTooLarge("payload", len(raw), MAX_SPARKPLUG_BYTES)
    try:
        message = _pb().FromString(raw)
    except DecodeError as exc:
        raise MalformedEnvelope("payload", f"not a Sparkplug B protobuf payload: {exc}") from None
    metrics = tuple(_decode_metric(f"metrics[{i}]", m) for i, m in enumerate(message.metrics))
    return SparkplugPayload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        metrics=metrics,
        seq=message.seq if message.HasField("seq") else None,
        uuid=_text("uuid", message.uuid) if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
    )


def _text(where: str, value: object) -> str:
    # proto2 strings are not checked on parse: upb hands back bytes that are not UTF-8
    if not isinstance(value, str):
        raise MalformedEnvelope(where, "is not valid UTF-8")
    return value


def _decode_metric(where: str, m: Any) -> SparkplugMetric:
    name = _text(f"{where}.name", m.name) if m.HasField("name") else None
    datatype = None
    if m.HasField("datatype"):
        try:
            datatype = SparkplugDataType(m.datatype)
        except ValueError:
            raise MalformedEnvelope(
                f"{where}.datatype", f"{m.datatype} is not a Sparkplug datatype"
            ) from None
    field = m.WhichOneof("value")
    if m.is_null:
        if field is not None:
            raise MalformedEnvelope(f"{where}.value", "a null metric carries no value")
        value: Value = None
    elif field is None:
        raise MalformedEnvelope(f"{where}.value", "is missing and the metric is not null")
    else:
        value = _from_wire(where, datatype, field, getattr(m, field))
    return SparkplugMetric(
        name=name,
        alias=m.alias if m.HasField("alias") else None,
        timestamp=m.timestamp if m.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        quality=_quality(f"{where}.properties", m.properties) if m.HasField("properties") else None,
    )


def _from_wire(where: str, datatype: SparkplugDataType | None, field: str, raw: Any) -> Value:
    if field not in ("int_value", "long_value", "float_value", "double_value",
                     "boolean_value", "string_value", "bytes_value"):  # fmt: skip
        raise MalformedEnvelope(f"{where}.value", f"{field} is not supported")
    if datatype is None:
        return _text(f"{where}.value", raw) if field == "string_value" else raw
    expected = _FIELD_OF.get(datatype)
    if expected is None:
        raise MalformedEnvelope(f"{where}.datatype", f"{datatype.name} is not supported")
    if field != expected and not (datatype is _T.UINT32 and field == "long_value"):
        raise MalformedEnvelope(f"{where}.value", f"{datatype.name} travels in {expected}")
    if datatype in _SIGNED32:
        return _signed32(where, datatype, raw)
    if datatype is SparkplugDataType.INT64:
        return raw - _U64 if raw >= 2**63 else raw
    if datatype in _UNSIGNED and raw >= _UNSIGNED[datatype]:
        raise MalformedEnvelope(f"{where}.value", f"{raw} is out of range for {datatype.name}")
    if field == "string_value":
        return _text(f"{where}.value", raw)
    return raw  # type: ignore[no-any-return]


def _signed32(where: str, datatype: SparkplugDataType, raw: int) -> int:
    """Int8/16/32 from a uint32, laid out in either 32-bit or the type's own two's complement."""
    bits = _SIGNED32[datatype]
    half = 2 ** (bits - 1)
    if raw < half:
        return raw
    if raw >= _U32 - half:
        return raw - _U32
    if raw < 2 * half:
        return raw - 2 * half
    raise MalformedEnvelope(f"{where}.value", f"{raw} is out of range for {datatype.name}")


def _quality(where: str, properties: Any) -> int | None:
    keys, values = list(properties.keys), list(properties.values)
    if len(keys) != len(values):
        raise MalformedEnvelope(where, f"{len(keys)} keys but {len(values)} values")
    quality = None
    for key, value in zip(keys, values, strict=True):
        if _text(f"{where}.keys", key) != "Quality":
            continue
        if value.type != SparkplugDataType.INT32 or value.WhichOneof("value") != "int_value":
            raise MalformedEnvelope(f"{where}.Quality", "must be an Int32 in int_value")
        if value.int_value not in _QUALITIES:
            raise MalformedEnvelope(f"{where}.Quality", f"{value.int_value} is not 0, 192 or 500")
        quality = value.int_value
    return quality  # type: ignore[no-any-return]


# -- signed envelopes in Sparkplug ---------------------------------------------------------------


def check_sparkplug_topic(topic: str, envelope: Envelope) -> None:
    """Raise :class:`TopicError` unless ``topic`` is where ``envelope`` travels in Sparkplug:
    a data envelope in DDATA of its gateway's edge node and its device, a loss or checkpoint
    envelope in NDATA. The group is not part of a gateway's identity and is not compared."""
    parsed = parse_sparkplug_topic(topic)
    node = sparkplug_edge_node(envelope.gateway)
    if envelope.device is None:
        expected = (SparkplugMessageType.NDATA, node, None)
    else:
        expected = (SparkplugMessageType.DDATA, node, sparkplug_device(envelope.device))
    if (parsed.type, parsed.edge_node, parsed.device) != expected:
        want = SparkplugTopic(parsed.group, *expected)
        raise TopicError(topic, f"the envelope belongs on {str(want)!r}")


def sparkplug_envelope(payload: SparkplugPayload) -> SignedEnvelope:
    """The signed envelope in a decoded DDATA or NDATA payload (not yet verified)."""
    if payload.uuid != SPARKPLUG_ENVELOPE_UUID:
        raise MalformedEnvelope(
            "uuid", f"must be {SPARKPLUG_ENVELOPE_UUID!r}, not {payload.uuid!r}"
        )
    if payload.body is None:
        raise MalformedEnvelope("body", "is missing: it carries the signed envelope")
    return decode_json(payload.body)


def decode_sparkplug_envelope(topic: str, raw: bytes) -> SignedEnvelope:
    """What ingest calls for a DDATA or NDATA message: the signed envelope it carries, checked
    against the topic. The signature is checked by ``verify``, not here.

    The payload must be well-formed protobuf within :data:`MAX_SPARKPLUG_BYTES`; its metrics,
    which are not signed and not evidence, are left unchecked (a third of the decoding time):
    :func:`decode_sparkplug` checks them.
    """
    parsed = parse_sparkplug_topic(topic)
    if parsed.type not in (SparkplugMessageType.DDATA, SparkplugMessageType.NDATA):
        raise TopicError(topic, "envelopes travel in DDATA and NDATA messages")
    if len(raw) > MAX_SPARKPLUG_BYTES:
        raise EnvelopeTooLarge("payload", len(raw), MAX_SPARKPLUG_BYTES)
    try:
        message = _pb().FromString(raw)
    except DecodeError as exc:
        raise MalformedEnvelope("payload", f"not a Sparkplug B protobuf payload: {exc}") from None
    payload = SparkplugPayload(
        uuid=_text("uuid", message.uuid) if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
    )
    signed = sparkplug_envelope(payload)
    check_sparkplug_topic(topic, signed.envelope)
    return signed
