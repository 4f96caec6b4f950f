"""The Sparkplug B codec: topics, payloads, integers both ways, signed envelopes in ``body``;
malformed input is refused with a typed error naming the field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import gateway.protocol as p
from gateway.protocol._sparkplug_pb import SCHEMA
from gateway.protocol._sparkplug_pb import Payload as Pb

T = p.SparkplugDataType
M = p.SparkplugMessageType
ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "tests" / "gateway" / "protocol" / "vectors"


def roundtrip(*metrics: p.SparkplugMetric, **fields: Any) -> p.SparkplugPayload:
    payload = p.SparkplugPayload(timestamp=1_764_000_000_000, metrics=metrics, seq=7, **fields)
    decoded = p.decode_sparkplug(p.encode_sparkplug(payload))
    assert decoded == payload
    return decoded


def raw_metric(**fields: Any) -> bytes:
    pb = Pb(timestamp=1, seq=0)
    pb.metrics.add(**fields)
    return pb.SerializeToString()


def refused(raw: bytes, field: str, error: type[p.ProtocolError] = p.MalformedEnvelope) -> str:
    with pytest.raises(error) as info:
        p.decode_sparkplug(raw)
    assert info.value.field == field
    return str(info.value)


# -- the schema ----------------------------------------------------------------------------------


def test_the_runtime_schema_is_the_proto_file_field_by_field() -> None:
    """Every field of sparkplug_b.proto, with its message, label, type and number, and no
    other, is in the descriptors built at run time."""
    text = (ROOT / "gateway" / "protocol" / "sparkplug_b.proto").read_text(encoding="utf-8")
    text = re.sub(r"//.*", "", text)
    in_proto = set()
    stack: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"message (\w+) \{", line):
            stack.append(m.group(1))
        elif line.startswith(("oneof", "enum")):
            stack.append("")
        elif line == "}":
            stack.pop()
        elif (m := re.match(r"(optional|repeated)?\s*([\w.]+) (\w+) = (\d+);", line)) and stack:
            label = m.group(1) or "optional"  # fields of a oneof
            in_proto.add(
                (".".join(s for s in stack if s), label, m.group(2), m.group(3), m.group(4))
            )
    built = set()
    for path, (fields, _) in SCHEMA.items():
        for label, kind, name, number, _oneof in fields:
            built.add((path, label, kind.rsplit(".", 1)[-1], name, str(number)))
    assert len(in_proto) > 60
    assert in_proto == built


def test_every_datatype_of_the_specification_has_its_number() -> None:
    text = (ROOT / "gateway" / "protocol" / "sparkplug_b.proto").read_text(encoding="utf-8")
    enum = dict(re.findall(r"^\s*(\w+)\s*=\s*(\d+);", text.split("message Payload")[0], re.M))
    assert len(enum) == len(T) == 35
    assert {name.upper(): int(n) for name, n in enum.items()} == {
        t.name.replace("_", ""): t.value for t in T
    }


# -- topics ----------------------------------------------------------------------------------------


def test_topics_of_the_namespace() -> None:
    assert p.sparkplug_topic("88.709.911", M.NBIRTH, "gw.1") == "spBv1.0/88.709.911/NBIRTH/gw.1"
    topic = p.sparkplug_topic("g", M.DDATA, "gw.1", "dev%2Fa")
    assert topic == "spBv1.0/g/DDATA/gw.1/dev%2Fa"
    assert p.parse_sparkplug_topic(topic) == p.SparkplugTopic("g", M.DDATA, "gw.1", "dev%2Fa")
    assert p.sparkplug_edge_node("88.709.911/line+2/a") == "line%2B2%2Fa"
    assert p.sparkplug_device("88.709.911/dev.kiln#1") == "dev.kiln%231"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("spAv1.0/g/NBIRTH/n", "not spBv1.0"),
        ("spBv1.0/g/NBIRTH", "not spBv1.0"),
        ("spBv1.0/g/NBORN/n", "unknown message type"),
        ("spBv1.0/g/NBIRTH/n/d", "has no a device"),
        ("spBv1.0/g/DDATA/n", "names a device"),
        ("spBv1.0//NDATA/n", "group ''"),
        ("spBv1.0/g/NDATA/+", "edge node '+'"),
        ("spBv1.0/g/DCMD/n/#", "device '#'"),
        ("spBv1.0/STATE/host", "not spBv1.0"),
    ],
)
def test_topics_outside_the_namespace_are_refused(topic: str, reason: str) -> None:
    with pytest.raises(p.TopicError, match=re.escape(reason)) as info:
        p.parse_sparkplug_topic(topic)
    assert info.value.topic == topic


def test_a_topic_cannot_be_made_with_a_reserved_character() -> None:
    with pytest.raises(p.TopicError, match="'a/b'"):
        p.sparkplug_topic("a/b", M.NDATA, "n")


# -- payloads --------------------------------------------------------------------------------------


def test_every_carried_datatype_round_trips_at_its_limits() -> None:
    limits: dict[p.SparkplugDataType, list[Any]] = {
        T.INT8: [-128, -1, 0, 127],
        T.INT16: [-32768, -1, 32767],
        T.INT32: [-(2**31), -1, 2**31 - 1],
        T.INT64: [-(2**63), -1, 2**63 - 1],
        T.UINT8: [0, 255],
        T.UINT16: [65535],
        T.UINT32: [2**32 - 1],
        T.UINT64: [2**64 - 1],
        T.DATETIME: [1_764_000_000_000],
        T.FLOAT: [1.5, -0.0],
        T.DOUBLE: [1234.5, -1e300, float("inf")],
        T.BOOLEAN: [True, False],
        T.STRING: ["", "温度/zone 1"],
        T.TEXT: ["a\nb"],
        T.UUID: ["123e4567-e89b-12d3-a456-426614174000"],
        T.BYTES: [b"\x00\xff"],
        T.FILE: [b"file"],
    }
    metrics = [
        p.SparkplugMetric(name=f"{t.name}/{i}", alias=n, timestamp=5, datatype=t, value=v)
        for n, (t, values) in enumerate(limits.items())
        for i, v in enumerate(values)
    ]
    roundtrip(*metrics)


def test_flags_quality_nulls_uuid_and_body_round_trip() -> None:
    roundtrip(
        p.SparkplugMetric(alias=9, timestamp=1, datatype=T.DOUBLE, value=None, quality=0),
        p.SparkplugMetric(alias=10, timestamp=1, value=None, is_historical=True, quality=500),
        p.SparkplugMetric(name="t", timestamp=1, datatype=T.INT16, value=3, is_transient=True),
        uuid="x",
        body=b"\x00{}",
    )
    # a payload with nothing set (the specification allows an empty NCMD, for instance)
    assert p.decode_sparkplug(b"") == p.SparkplugPayload()


def test_negative_small_integers_are_sent_as_32_bit_twos_complement() -> None:
    """What this codec emits (docs/protocol.md): Eclipse Tahu's layout, -1 → 0xFFFFFFFF."""
    raw = p.encode_sparkplug(
        p.SparkplugPayload(metrics=(p.SparkplugMetric(name="a", datatype=T.INT8, value=-1),))
    )
    assert Pb.FromString(raw).metrics[0].int_value == 0xFFFF_FFFF
    raw = p.encode_sparkplug(
        p.SparkplugPayload(metrics=(p.SparkplugMetric(name="a", datatype=T.INT64, value=-2),))
    )
    assert Pb.FromString(raw).metrics[0].long_value == 2**64 - 2


@pytest.mark.parametrize(
    ("datatype", "wire", "value"),
    [
        (T.INT8, 0xFF, -1),  # the type's own width, as pysparkplug writes it
        (T.INT8, 0xFFFF_FFFF, -1),  # sign-extended to 32 bits, as Eclipse Tahu writes it
        (T.INT8, 0x80, -128),
        (T.INT8, 0xFFFF_FF80, -128),
        (T.INT8, 0x7F, 127),
        (T.INT16, 0xFFFF, -1),
        (T.INT16, 0x8000, -32768),
        (T.INT16, 0xFFFF_8000, -32768),
        (T.INT32, 0x8000_0000, -(2**31)),
    ],
)
def test_negative_small_integers_are_read_in_either_layout(
    datatype: p.SparkplugDataType, wire: int, value: int
) -> None:
    metric = p.decode_sparkplug(raw_metric(name="a", datatype=datatype, int_value=wire)).metrics[0]
    assert metric.value == value


def test_uint32_is_written_in_int_value_and_read_from_long_value_too() -> None:
    """The specification puts UInt32 in ``int_value``; Eclipse Tahu's libraries (the npm
    ``sparkplug-payload`` 1.0.3, for one) write and read it in ``long_value``."""
    raw = p.encode_sparkplug(
        p.SparkplugPayload(metrics=(p.SparkplugMetric(name="a", datatype=T.UINT32, value=7),))
    )
    assert Pb.FromString(raw).metrics[0].WhichOneof("value") == "int_value"
    tahu = raw_metric(name="a", datatype=T.UINT32, long_value=4_000_000_000)
    assert p.decode_sparkplug(tahu).metrics[0].value == 4_000_000_000
    refused(raw_metric(datatype=T.UINT32, long_value=2**32), "metrics[0].value")


@pytest.mark.parametrize(
    ("datatype", "wire"),
    [(T.INT8, 0x100), (T.INT8, 0xFFFF_FF7F), (T.INT16, 0x1_0000), (T.UINT8, 256)],
)
def test_integers_outside_both_layouts_are_refused(
    datatype: p.SparkplugDataType, wire: int
) -> None:
    message = refused(raw_metric(datatype=datatype, int_value=wire), "metrics[0].value")
    assert "out of range" in message


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from([T.INT8, T.INT16, T.INT32]))
def test_signed_integers_round_trip(value: int, datatype: p.SparkplugDataType) -> None:
    bits = {T.INT8: 8, T.INT16: 16, T.INT32: 32}[datatype]
    value = max(-(2 ** (bits - 1)), min(2 ** (bits - 1) - 1, value))
    roundtrip(p.SparkplugMetric(alias=1, datatype=datatype, value=value))


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"datatype": 35, "int_value": 1}, "metrics[0].datatype", "not a Sparkplug datatype"),
        ({"datatype": 16, "int_value": 1}, "metrics[0].datatype", "DATASET is not supported"),
        ({"datatype": 10, "float_value": 1.0}, "metrics[0].value", "DOUBLE travels in double"),
        ({"datatype": 11, "int_value": 1}, "metrics[0].value", "BOOLEAN travels in boolean"),
        ({"datatype": 10}, "metrics[0].value", "is missing"),
        ({"datatype": 10, "is_null": True, "double_value": 1}, "metrics[0].value", "null"),
        ({"template_value": {}}, "metrics[0].value", "template_value is not supported"),
    ],
)
def test_malformed_metrics_are_refused_naming_the_field(
    fields: dict[str, Any], field: str, reason: str
) -> None:
    assert reason in refused(raw_metric(**fields), field)


def test_text_that_is_not_utf8_is_refused() -> None:
    bad = bytes.fromhex("1204") + bytes.fromhex("0a02c328")  # metrics[0].name = C3 28
    refused(bad, "metrics[0].name")
    refused(bytes.fromhex("2202c328"), "uuid")


def test_quality_property_must_be_an_int32_code() -> None:
    pb = Pb()
    metric = pb.metrics.add(alias=1, datatype=T.DOUBLE, double_value=1.0)
    metric.properties.keys.append("Quality")
    metric.properties.values.add(type=T.INT32, int_value=7)
    assert "not 0, 192 or 500" in refused(pb.SerializeToString(), "metrics[0].properties.Quality")
    metric.properties.values[0].type = T.INT64
    assert "Int32" in refused(pb.SerializeToString(), "metrics[0].properties.Quality")
    metric.properties.keys.append("Engineering Units")
    assert "2 keys but 1 values" in refused(pb.SerializeToString(), "metrics[0].properties")


def test_not_protobuf_and_too_large_are_refused() -> None:
    refused(b"\xff\xff\xff", "payload")
    refused(b"{" * (p.MAX_SPARKPLUG_BYTES + 1), "payload", p.EnvelopeTooLarge)


def test_a_value_its_datatype_cannot_hold_is_not_encoded() -> None:
    for datatype, value in [(T.INT8, 128), (T.UINT16, -1), (T.BOOLEAN, 1), (T.INT32, 1.5),
                            (T.FLOAT, 1e39), (T.STRING, b"x")]:  # fmt: skip
        payload = p.SparkplugPayload(
            metrics=(
                p.SparkplugMetric(name="ok", datatype=T.INT8, value=1),
                p.SparkplugMetric(name="bad", datatype=datatype, value=value),
            )
        )
        with pytest.raises(p.MalformedEnvelope) as info:
            p.encode_sparkplug(payload)
        assert info.value.field == "metrics[1].value"


# -- signed envelopes in DDATA and NDATA -----------------------------------------------------------


def vector(name: str) -> tuple[bytes, bytes]:
    """The JSON form of a contract test vector and its public key."""
    vec = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    return json.dumps(vec["json"]).encode(), bytes.fromhex(vec["public_key"])


def carrying(body: bytes | None, uuid: str | None = p.SPARKPLUG_ENVELOPE_UUID) -> bytes:
    payload = p.SparkplugPayload(
        timestamp=1, seq=3, uuid=uuid, body=body,
        metrics=(p.SparkplugMetric(alias=5, timestamp=1, datatype=T.DOUBLE, value=1.0),),
    )  # fmt: skip
    return p.encode_sparkplug(payload)


def test_the_envelope_in_ddata_verifies_with_the_gateway_key() -> None:
    body, public = vector("data")
    topic = "spBv1.0/88.709.911/DDATA/gw.kiln-line.01/dev.kiln.01"
    signed = p.decode_sparkplug_envelope(topic, carrying(body))
    signed.verify(public)
    assert signed == p.decode_json(body)
    body, public = vector("loss")
    signed = p.decode_sparkplug_envelope("spBv1.0/any-group/NDATA/gw.kiln-line.01", carrying(body))
    signed.verify(public)
    assert signed.envelope.loss is not None


def test_a_tampered_body_does_not_verify() -> None:
    body, public = vector("data")
    tampered = body.replace(b"1234.5", b"1234.6")
    assert tampered != body
    signed = p.decode_sparkplug_envelope(
        "spBv1.0/g/DDATA/gw.kiln-line.01/dev.kiln.01", carrying(tampered)
    )
    with pytest.raises(p.SignatureError):
        signed.verify(public)


@pytest.mark.parametrize(
    ("topic", "error", "match"),
    [
        ("spBv1.0/g/DDATA/gw.other/dev.kiln.01", p.TopicError, "belongs on"),
        ("spBv1.0/g/DDATA/gw.kiln-line.01/dev.press", p.TopicError, "belongs on"),
        ("spBv1.0/g/NDATA/gw.kiln-line.01", p.TopicError, "DDATA/gw.kiln-line.01/dev.kiln.01"),
        ("spBv1.0/g/DBIRTH/gw.kiln-line.01/dev.kiln.01", p.TopicError, "DDATA and NDATA"),
        ("gt/v1/88.709.911/gw.kiln-line.01/data/dev.kiln.01", p.TopicError, "not spBv1.0"),
    ],
)
def test_an_envelope_on_another_topic_is_refused(
    topic: str, error: type[Exception], match: str
) -> None:
    body, _ = vector("data")
    with pytest.raises(error, match=re.escape(match)):
        p.decode_sparkplug_envelope(topic, carrying(body))


def test_a_ddata_without_its_envelope_is_refused() -> None:
    topic = "spBv1.0/g/DDATA/gw.kiln-line.01/dev.kiln.01"
    body, _ = vector("data")
    with pytest.raises(p.MalformedEnvelope) as info:
        p.decode_sparkplug_envelope(topic, carrying(None))
    assert info.value.field == "body"
    with pytest.raises(p.MalformedEnvelope) as info:
        p.decode_sparkplug_envelope(topic, carrying(body, uuid="other"))
    assert info.value.field == "uuid"
    with pytest.raises(p.MalformedEnvelope) as info:
        p.decode_sparkplug_envelope(topic, carrying(b'{"v":1,"kind":"data"}'))
    assert info.value.field == "created"
    with pytest.raises(p.MalformedEnvelope) as info:
        p.decode_sparkplug_envelope(topic, b"\xff\xff\xff")
    assert info.value.field == "payload"
    with pytest.raises(p.EnvelopeTooLarge):
        p.decode_sparkplug_envelope(topic, carrying(body + b" " * p.MAX_SPARKPLUG_BYTES))


def test_signing_a_fresh_envelope_end_to_end() -> None:
    key = Ed25519PrivateKey.generate()
    env = p.Envelope(
        "88.709.911/gw.a", 1, p.GENESIS, 1_764_000_000_000_000, "88.709.911/dev.b",
        (p.Sample("t", 1_764_000_000_000_000, -3, p.Quality.GOOD),),
    )  # fmt: skip
    raw = carrying(p.encode_json(p.sign(env, key)))
    signed = p.decode_sparkplug_envelope("spBv1.0/88.709.911/DDATA/gw.a/dev.b", raw)
    signed.verify(p.public_key_bytes(key))
    assert signed.envelope == env
