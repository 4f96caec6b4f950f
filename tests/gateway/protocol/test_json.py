"""Decoding refuses every malformed payload with a typed error that names the field."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.protocol as p

VECTORS = Path(__file__).parent / "vectors"


def doc(name: str = "data") -> dict[str, Any]:
    vec = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    return vec["json"]


def encoded(d: dict[str, Any]) -> bytes:
    return json.dumps(d, ensure_ascii=False).encode()


def edit(path: str, value: Any, name: str = "data") -> bytes:
    """The vector with the field at ``path`` (``samples.0.1``) replaced, or deleted if ...."""
    d = doc(name)
    *parents, last = path.split(".")
    target: Any = d
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value is ...:
        del target[key]
    else:
        target[key] = value
    return encoded(d)


CASES = [
    # (payload, exception, field, text in the message)
    (b"\xff\xfe{}", p.MalformedEnvelope, "payload", "UTF-8"),
    (b"{not json", p.MalformedEnvelope, "payload", "not JSON"),
    (b"[1, 2]", p.MalformedEnvelope, "payload", "object"),
    (b'{"v": 1, "v": 1}', p.MalformedEnvelope, "v", "twice"),
    (b"[" * 100_000 + b"]" * 100_000, p.MalformedEnvelope, "payload", "nested"),
    (edit("v", ...), p.MalformedEnvelope, "v", "missing"),
    (edit("v", 2), p.UnsupportedVersion, "v", "version 2"),
    (edit("v", "1"), p.UnsupportedVersion, "v", "'1'"),
    (edit("v", True), p.UnsupportedVersion, "v", "True"),
    (edit("kind", "summary"), p.MalformedEnvelope, "kind", "must be one of"),
    (edit("seq", ...), p.MalformedEnvelope, "seq", "missing"),
    (edit("extra", 1), p.MalformedEnvelope, "extra", "not a field"),
    (edit("loss", {}), p.MalformedEnvelope, "loss", "not a field"),
    (edit("seq", -1), p.MalformedEnvelope, "seq", "outside"),
    (edit("seq", 2**64), p.MalformedEnvelope, "seq", "outside"),
    (edit("seq", 1.0), p.MalformedEnvelope, "seq", "integer"),
    (edit("created", "2025-11-24"), p.MalformedEnvelope, "created", "integer"),
    (edit("prev", "00" * 31), p.MalformedEnvelope, "prev", "64"),
    (edit("prev", "AB" * 32), p.MalformedEnvelope, "prev", "lower-case"),
    (edit("sig", "not base64!"), p.MalformedEnvelope, "sig", "base64"),
    (edit("sig", base64.b64encode(bytes(63)).decode()), p.MalformedEnvelope, "sig", "64 bytes"),
    (edit("sig", 12), p.MalformedEnvelope, "sig", "base64"),
    (edit("gateway", "88.709.911"), p.MalformedEnvelope, "gateway", "handle"),
    (edit("gateway", "88.709.911/gw.kiln-line.01/../../x"), p.MalformedEnvelope, "gateway", ".."),
    (edit("gateway", "88.709.912/gw.1"), p.MalformedEnvelope, "device", "firm prefix"),
    (edit("device", "88.1021.150/dev.1"), p.MalformedEnvelope, "device", "firm prefix"),
    (edit("device", "88.709.911/d';DROP TABLE sample;--"), p.MalformedEnvelope, "device", "white"),
    (edit("samples", {}), p.MalformedEnvelope, "samples", "list"),
    (edit("samples", []), p.MalformedEnvelope, "samples", "at least one"),
    (edit("samples.0", ["t", 1, 2]), p.MalformedEnvelope, "samples[0]", "[tag, ts"),
    (edit("samples.1.3", "GOOD"), p.MalformedEnvelope, "samples[1].quality", "one of"),
    (edit("samples.1.1", 1.5e15), p.MalformedEnvelope, "samples[1].ts", "integer"),
    (edit("samples.2.2", {"x": 1}), p.MalformedEnvelope, "samples[2].value", "dict"),
    (edit("samples.2.2", 2**60), p.MalformedEnvelope, "samples[2].value", "as text"),
    (edit("samples.0.0", "a" * 256), p.EnvelopeTooLarge, "samples[0].tag", "limit"),
    (edit("samples.0.0", 5), p.MalformedEnvelope, "samples[0].tag", "string"),
    (encoded(doc()).replace(b"1234.5", b"NaN"), p.MalformedEnvelope, "payload", "NaN"),
    (encoded(doc()).replace(b"1234.5", b"-Infinity"), p.MalformedEnvelope, "payload", "Infinity"),
    (encoded(doc()).replace(b"1234.5", b"1e999"), p.MalformedEnvelope, "samples[0].value", "inf"),
    # an integer literal longer than Python converts: a refusal, not a bare ValueError
    (encoded(doc()).replace(b"1234.5", b"9" * 5000), p.MalformedEnvelope, "payload", "digits"),
    (b" " * (p.MAX_PAYLOAD_BYTES + 1), p.EnvelopeTooLarge, "payload", "limit"),
    (edit("loss.reason", ..., "loss"), p.MalformedEnvelope, "loss.reason", "missing"),
    (edit("loss.first", 0, "loss"), p.MalformedEnvelope, "loss.first", "outside"),
    (edit("loss.extra", 1, "loss"), p.MalformedEnvelope, "loss.extra", "not a field"),
    (edit("loss", [1, 2], "loss"), p.MalformedEnvelope, "loss", "object"),
    (edit("device", "88.709.911/d", "loss"), p.MalformedEnvelope, "device", "not a field"),
]


@pytest.mark.parametrize(("payload", "error", "field", "text"), CASES)
def test_malformed_payloads_are_refused_with_the_field(
    payload: bytes, error: type[p.ProtocolError], field: str, text: str | None
) -> None:
    with pytest.raises(error) as caught:
        p.decode_json(payload)
    assert caught.value.field == field
    assert text is None or text in str(caught.value)


def test_non_canonical_base64_signatures_are_refused() -> None:
    d = doc()
    sig = d["sig"]
    # the last character before "==" carries 4 unused bits: another character, same bytes
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(sig[-3]) ^ 1]
    d["sig"] = sig[:-3] + twin + "=="
    assert base64.b64decode(d["sig"]) == base64.b64decode(sig)
    with pytest.raises(p.MalformedEnvelope, match="canonical base64"):
        p.decode_json(encoded(d))


def test_an_oversized_envelope_is_refused_when_encoded() -> None:
    samples = tuple(
        p.Sample(f"t{i}", 1_764_000_000_000_000, "x" * 200) for i in range(p.MAX_SAMPLES)
    )
    env = p.Envelope("88.709.911/gw.1", 1, p.GENESIS, 1_764_000_000_000_000, "88.709.911/d.1",
                     samples)  # fmt: skip
    signed = p.SignedEnvelope(env, bytes(64))
    with pytest.raises(p.EnvelopeTooLarge) as caught:
        p.encode_json(signed)
    assert caught.value.field == "payload"


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_as_another_exception(raw: bytes) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.decode_json(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.sampled_from(["v", "kind", "gateway", "seq", "prev", "created", "device", "samples",
                        "sig", "samples.0", "samples.0.0", "samples.0.1", "samples.0.2",
                        "samples.0.3"]), json_values)  # fmt: skip
def test_any_field_replaced_by_any_json_is_refused_or_still_valid(path: str, value: Any) -> None:
    try:
        signed = p.decode_json(edit(path, value))
    except p.ProtocolError:
        return
    again = p.decode_json(p.encode_json(signed))
    assert again.envelope.canonical == signed.envelope.canonical
