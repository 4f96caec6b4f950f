"""The one-pass decoder accepts only what ``gateway.protocol`` accepts, with the same bytes.

Whatever it declines goes to the full decoder, so it may decline anything; what it must never
do is accept an envelope the contract refuses, or produce other canonical bytes or rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.protocol as p
from ingest._decode import Checked, Refused, precheck
from ingest._fastjson import decode_packed, learn_tags
from ingest._rows import Packed

VECTORS = Path(__file__).parents[1] / "gateway" / "protocol" / "vectors"
GATEWAY, DEVICE = "88.709.911/gw.a", "88.709.911/dev.a"
T0 = 1_764_000_000_000_000
TAGS = ["t0", "温度", "a b", "x" * 255]
SERIES = {tag: n + 1 for n, tag in enumerate(TAGS)}
learn_tags(TAGS)

values = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=20)
)
samples = st.lists(
    st.tuples(
        st.sampled_from(TAGS),
        st.integers(min_value=p.MIN_TS, max_value=p.MAX_TS - 1),
        values,
        st.sampled_from(list(p.Quality)),
    ),
    min_size=1,
    max_size=30,
)
#: anything JSON can hold, to put where the contract expects something else
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


def payload(items: list[tuple[str, int, Any, p.Quality]]) -> bytes:
    env = p.Envelope(GATEWAY, 7, bytes(range(32)), T0, DEVICE,
                     tuple(p.Sample(*item) for item in items))  # fmt: skip
    return p.encode_json(p.SignedEnvelope(env, bytes(64)))


def assert_same(raw: bytes) -> None:
    """The one-pass decoder declines, or agrees with the full decoder byte for byte."""
    fast = decode_packed(raw, SERIES)
    try:
        full = p.decode_json(raw).envelope
    except p.ProtocolError:
        assert fast is None
        return
    if fast is None:
        return
    head, canonical, packed, has_nul = fast
    assert canonical == full.canonical
    assert (head.envelope.gateway, head.envelope.device, head.envelope.seq) == (
        full.gateway, full.device, full.seq,
    )  # fmt: skip
    rows = [(s.tag, s.ts, s.value, int(s.quality)) for s in full.samples]
    assert packed == Packed.of(rows, SERIES)
    assert has_nul == any(isinstance(s.value, str) and "\x00" in s.value for s in full.samples)


@settings(max_examples=300)
@given(samples)
def test_valid_envelopes_decode_in_one_pass_to_the_same_bytes(items: list[Any]) -> None:
    raw = payload(items)
    assert decode_packed(raw, SERIES) is not None
    assert_same(raw)


@settings(max_examples=500)
@given(samples, st.data())
def test_a_broken_sample_is_never_accepted(items: list[Any], data: st.DataObject) -> None:
    doc = json.loads(payload(items))
    i = data.draw(st.integers(0, len(items) - 1))
    j = data.draw(st.integers(0, 4))
    if j == 4:
        doc["samples"][i] = data.draw(json_values)
    else:
        doc["samples"][i][j] = data.draw(json_values)
    assert_same(json.dumps(doc).encode())


@settings(max_examples=300)
@given(samples, st.sampled_from(["v", "kind", "gateway", "seq", "prev", "created", "sig",
                                 "device", "samples", "extra"]), json_values)  # fmt: skip
def test_a_broken_field_is_never_accepted(items: list[Any], field: str, value: Any) -> None:
    doc = json.loads(payload(items))
    doc[field] = value
    assert_same(json.dumps(doc).encode())


def test_what_the_strict_json_refuses_is_declined() -> None:
    raw = payload([("t0", T0, 1.5, p.Quality.GOOD)])
    twice = raw.replace(b'"seq":7', b'"seq":7,"seq":8')
    escaped = raw.replace(b'"seq":7', b'"seq":7,"s\\u0065q":8')
    for bad in [twice, escaped, raw.replace(b"1.5", b"NaN"), raw.replace(b"1.5", b"1e999")]:
        assert bad != raw
        assert decode_packed(bad, SERIES) is None
        assert_same(bad)


def test_an_unknown_tag_or_series_is_declined_until_learned() -> None:
    raw = payload([("t0", T0, 1.5, p.Quality.GOOD)])
    assert decode_packed(raw, {}) is None
    new = payload([("new.tag", T0, math.pi, p.Quality.BAD)])
    assert decode_packed(new, {"new.tag": 9}) is None
    learn_tags(["new.tag"])
    assert decode_packed(new, {"new.tag": 9}) is not None


def test_the_test_vector_decodes_in_one_pass() -> None:
    vector = json.loads((VECTORS / "data.json").read_text(encoding="utf-8"))
    raw = json.dumps(vector["json"]).encode()
    tags = [item[0] for item in vector["json"]["samples"]]
    learn_tags(tags)
    fast = decode_packed(raw, dict.fromkeys(tags, 1))
    assert fast is not None
    assert fast[1].hex() == vector["canonical"]
    assert_same(raw)


def test_precheck_refuses_a_packed_envelope_on_another_topic_as_the_full_decoder_does() -> None:
    raw = payload([("t0", T0, 1.5, p.Quality.GOOD)])
    other = p.data_topic("88.709.911/gw.b", DEVICE)
    fast = precheck(other, raw, (DEVICE, SERIES))
    assert isinstance(fast, Refused)
    assert fast == precheck(other, raw)
    assert fast.reason == "topic_mismatch"
    here = precheck(p.data_topic(GATEWAY, DEVICE), raw, (DEVICE, SERIES))
    assert isinstance(here, Checked)
    assert here.packed is not None
