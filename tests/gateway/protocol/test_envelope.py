"""The envelope contract: canonical bytes, chain digest and Ed25519 signatures."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

import gateway.protocol as p

VECTORS = Path(__file__).parent / "vectors"
ROOT = Path(__file__).resolve().parents[3]
GW = "88.709.911/gw.kiln-line.01"
DEV = "88.709.911/dev.kiln.01"
T0 = 1_764_000_000_000_000


def vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))


def vector_key(vec: dict[str, Any]) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vec["private_key_seed"]))


def spec_canonical(doc: dict[str, Any]) -> bytes:
    """The canonical bytes built straight from docs/protocol.md, independently of the code."""

    def string(text: str, width: str = ">H") -> bytes:
        raw = text.encode()
        return struct.pack(width, len(raw)) + raw

    kind = {"data": 1, "loss": 2, "checkpoint": 3}[doc["kind"]]
    out = b"guantong-envelope\x00" + struct.pack(">BB", doc["v"], kind)
    out += string(doc["gateway"]) + string(doc.get("device") or "")
    samples = doc.get("samples", [])
    out += struct.pack(">Q", doc["seq"]) + bytes.fromhex(doc["prev"])
    out += struct.pack(">qI", doc["created"], len(samples))
    for tag, ts, value, quality in samples:
        q = {"good": 0, "uncertain": 1, "bad": 2}[quality]
        out += string(tag)
        if value is None:
            out += struct.pack(">qBB", ts, q, 0)
        elif isinstance(value, bool):
            out += struct.pack(">qBBB", ts, q, 2, value)
        elif isinstance(value, str):
            out += struct.pack(">qBB", ts, q, 3) + string(value, ">I")
        else:
            out += struct.pack(">qBBd", ts, q, 1, float(value))
    if "loss" in doc:
        loss = doc["loss"]
        out += struct.pack(">QQQ", loss["first"], loss["last"], loss["samples"])
        out += string(loss["reason"])
    if "checkpoint" in doc:
        cp = doc["checkpoint"]
        out += struct.pack(">qqQ", cp["from"], cp["to"], cp["previous"])
        out += bytes.fromhex(cp["previous_hash"])
        out += struct.pack(">BI", cp["restarted"], len(cp["periods"]))
        for period in cp["periods"]:
            out += struct.pack(">qqI", period["from"], period["to"], len(period["counts"]))
            for device, tag, samples in period["counts"]:
                out += string(device) + string(tag) + struct.pack(">Q", samples)
    return out


@pytest.mark.parametrize("name", ["data", "loss", "checkpoint"])
def test_vectors_match_the_documented_layout_and_the_code(name: str) -> None:
    vec = vector(name)
    raw = json.dumps(vec["json"], ensure_ascii=False).encode()
    signed = p.decode_json(raw)
    env = signed.envelope
    assert env.canonical.hex() == vec["canonical"]
    assert spec_canonical(vec["json"]).hex() == vec["canonical"]
    assert env.digest.hex() == vec["sha256"] == hashlib.sha256(env.canonical).hexdigest()
    signed.verify(bytes.fromhex(vec["public_key"]))
    resigned = p.sign(env, vector_key(vec))
    assert resigned.signature.hex() == vec["signature"]  # Ed25519 is deterministic
    assert p.public_key_bytes(vector_key(vec)).hex() == vec["public_key"]
    assert p.envelope_topic(env) == vec["topic"]
    assert json.loads(p.encode_json(signed)) == vec["json"]


def test_the_loss_vector_continues_the_data_vector_chain() -> None:
    data, loss = vector("data"), vector("loss")
    assert loss["json"]["prev"] == data["sha256"]
    assert vector("checkpoint")["json"]["prev"] == loss["sha256"]
    assert data["json"]["prev"] == p.GENESIS.hex()


def test_canonical_bytes_are_identical_across_processes() -> None:
    code = (
        "import json, sys, gateway.protocol as p\n"
        "raw = open(sys.argv[1], encoding='utf-8').read()\n"
        "doc = json.loads(raw)['json']\n"
        "print(p.decode_json(json.dumps(doc).encode()).envelope.canonical.hex())\n"
    )
    outputs = set()
    for seed in ("0", "1", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(VECTORS / "data.json")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(out.stdout.strip())
    assert outputs == {vector("data")["canonical"]}


def test_flipping_any_byte_of_a_signed_envelope_fails_verification() -> None:
    vec = vector("data")
    public = bytes.fromhex(vec["public_key"])
    envelope = p.decode_json(json.dumps(vec["json"]).encode()).envelope
    raw = p.encode_json(p.sign(envelope, vector_key(vec)))
    p.decode_json(raw).verify(public)
    for i in range(len(raw)):
        for mask in (0x01, 0x02, 0x40, 0x80):
            flipped = raw[:i] + bytes([raw[i] ^ mask]) + raw[i + 1 :]
            with pytest.raises(p.ProtocolError):
                p.decode_json(flipped).verify(public)


def test_another_gateways_key_does_not_verify() -> None:
    vec = vector("data")
    signed = p.decode_json(json.dumps(vec["json"]).encode())
    other = p.public_key_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(p.SignatureError) as caught:
        signed.verify(other)
    assert (caught.value.gateway, caught.value.seq) == (GW, 1)
    with pytest.raises(p.SignatureError, match="not 32 bytes"):
        signed.verify(other[:31])


def test_signature_covers_every_field() -> None:
    key = Ed25519PrivateKey.generate()
    public = p.public_key_bytes(key)
    base = p.Envelope(GW, 5, bytes(range(32)), T0, DEV, (p.Sample("a", T0, 1.0),))
    signed = p.sign(base, key)
    variants = [
        p.Envelope(GW, 6, base.prev, T0, DEV, base.samples),
        p.Envelope(GW, 5, bytes(32), T0, DEV, base.samples),
        p.Envelope(GW, 5, base.prev, T0 + 1, DEV, base.samples),
        p.Envelope(GW, 5, base.prev, T0, "88.709.911/dev.other", base.samples),
        p.Envelope("88.709.911/gw.other", 5, base.prev, T0, DEV, base.samples),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("b", T0, 1.0),)),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("a", T0 + 1, 1.0),)),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("a", T0, 1.0000001),)),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("a", T0, True),)),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("a", T0, "1.0"),)),
        p.Envelope(GW, 5, base.prev, T0, DEV, (p.Sample("a", T0, 1.0, p.Quality.BAD),)),
    ]
    for variant in variants:
        assert variant.canonical != base.canonical
        with pytest.raises(p.SignatureError):
            p.SignedEnvelope(variant, signed.signature).verify(public)


def test_integers_travel_as_doubles() -> None:
    as_int = p.Envelope(GW, 1, p.GENESIS, T0, DEV, (p.Sample("n", T0, 17),))
    as_float = p.Envelope(GW, 1, p.GENESIS, T0, DEV, (p.Sample("n", T0, 17.0),))
    assert as_int.canonical == as_float.canonical


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        ({"seq": 0}, "seq", "outside"),
        ({"seq": True}, "seq", "integer"),
        ({"prev": b"short"}, "prev", "32 bytes"),
        ({"created": 0}, "created", "outside"),
        ({"gateway": "88.709.911/GW.01 "}, "gateway", "whitespace"),
        ({"gateway": "88.709.911/x", "device": "88.709.912/d"}, "device", "firm prefix"),
        ({"device": "88.709.911/dev.x", "gateway": "88.709.911/gw.01", "samples": ()}, "samples",
         "at least one"),
        ({"device": None}, "device", "names its device"),
        ({"gateway": "88.709.911/Gw", "device": "88.709.911/d", "prev": p.GENESIS},
         None, None),
    ],
)  # fmt: skip
def test_construction_names_the_bad_field(
    kwargs: dict[str, Any], field: str | None, reason: str | None
) -> None:
    fields: dict[str, Any] = {
        "gateway": GW,
        "seq": 1,
        "prev": p.GENESIS,
        "created": T0,
        "device": DEV,
        "samples": (p.Sample("a", T0, 1.0),),
        **kwargs,
    }
    if field is None:
        p.Envelope(**fields)  # the suffix keeps its case: a valid identifier
        return
    with pytest.raises(p.MalformedEnvelope) as caught:
        p.Envelope(**fields)
    assert caught.value.field == field
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("sample", "field", "reason"),
    [
        (p.Sample("", T0, 1.0), "samples[0].tag", "empty"),
        (p.Sample("a\nb", T0, 1.0), "samples[0].tag", "control"),
        (p.Sample("é" * 128, T0, 1.0), "samples[0].tag", "limit"),
        (p.Sample("a", p.MIN_TS - 1, 1.0), "samples[0].ts", "outside"),
        (p.Sample("a", p.MAX_TS, 1.0), "samples[0].ts", "outside"),
        (p.Sample("a", T0, float("nan")), "samples[0].value", "send None"),
        (p.Sample("a", T0, float("-inf")), "samples[0].value", "send None"),
        (p.Sample("a", T0, 2**53 + 1), "samples[0].value", "as text"),
        (p.Sample("a", T0, "x" * (p.MAX_TEXT_BYTES + 1)), "samples[0].value", "limit"),
        (p.Sample("a", T0, [1]), "samples[0].value", "not allowed"),  # type: ignore[arg-type]
        (p.Sample("a", T0, 1.0, 0), "samples[0].quality", "Quality"),  # type: ignore[arg-type]
        (p.Sample("a", T0, "\ud800"), "samples[0].value", "surrogate"),
    ],
)
def test_bad_samples_are_refused_naming_the_sample(
    sample: p.Sample, field: str, reason: str
) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.Envelope(GW, 1, p.GENESIS, T0, DEV, (sample,))
    assert caught.value.field == field
    assert reason in str(caught.value)


def test_sample_count_is_bounded() -> None:
    samples = tuple(p.Sample(f"t{i}", T0, float(i)) for i in range(p.MAX_SAMPLES + 1))
    with pytest.raises(p.EnvelopeTooLarge) as caught:
        p.Envelope(GW, 1, p.GENESIS, T0, DEV, samples)
    assert (caught.value.size, caught.value.limit) == (p.MAX_SAMPLES + 1, p.MAX_SAMPLES)


def test_loss_envelopes_declare_a_range_before_themselves() -> None:
    p.Envelope(GW, 10, p.GENESIS, T0, loss=p.Loss(3, 9, 0, "outbox full"))
    with pytest.raises(p.MalformedEnvelope) as caught:
        p.Envelope(GW, 10, p.GENESIS, T0, loss=p.Loss(3, 10, 0, "outbox full"))
    assert caught.value.field == "loss.last"
    with pytest.raises(p.MalformedEnvelope) as caught:
        p.Envelope(GW, 10, p.GENESIS, T0, loss=p.Loss(3, 4, 0, ""))
    assert caught.value.field == "loss.reason"
    with pytest.raises(p.MalformedEnvelope) as caught:
        p.Envelope(GW, 10, p.GENESIS, T0, DEV, loss=p.Loss(3, 4, 0, "x"))
    assert caught.value.field == "loss"


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-p.MAX_EXACT_INT, p.MAX_EXACT_INT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
samples = st.builds(
    p.Sample,
    tag=st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30),
    ts=st.integers(p.MIN_TS, p.MAX_TS - 1),
    value=values,
    quality=st.sampled_from(p.Quality),
)


@given(
    st.lists(samples, min_size=1, max_size=20),
    st.integers(1, 2**63 - 1),
    st.binary(min_size=32, max_size=32),
)
def test_json_round_trip_keeps_the_canonical_bytes(
    items: list[p.Sample], seq: int, prev: bytes
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    env = p.Envelope(GW, seq, prev, T0, DEV, tuple(items))
    signed = p.sign(env, key)
    back = p.decode_json(p.encode_json(signed))
    assert back.envelope.canonical == env.canonical
    assert back.signature == signed.signature
    back.verify(p.public_key_bytes(key))
