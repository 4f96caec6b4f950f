"""The one-pass decoder accepts only what ``gateway.protocol`` accepts, with the same bytes.

Whatever it declines goes to the full decoder, so it may decline anything; what it must never
do is accept an envelope the contract refuses, or produce other canonical bytes or rows.
It has two implementations, the compiled scanner and the Python loop it falls back to:
every check here runs both, and where both accept, they agree to the byte.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import gateway.protocol as p
from ingest import _fastjson
from ingest._decode import Checked, Refused, precheck
from ingest._fastjson import learn_tags
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


@contextlib.contextmanager
def compiled(on: bool) -> Iterator[None]:
    saved = _fastjson.COMPILED
    _fastjson.COMPILED = on
    try:
        yield
    finally:
        _fastjson.COMPILED = saved


def decode_both(raw: bytes, series: dict[str, int]) -> tuple[Any, Any]:
    """(the compiled scanner's result, the Python loop's)."""
    with compiled(True):
        scanned = _fastjson.decode_packed(raw, series)
    with compiled(False):
        looped = _fastjson.decode_packed(raw, series)
    if scanned is not None and looped is not None:
        assert scanned[1:] == looped[1:]
        assert scanned[0].envelope == looped[0].envelope
        assert scanned[0].signature == looped[0].signature
    return scanned, looped


def decode_packed(raw: bytes, series: dict[str, int]) -> Any:
    """Both implementations' result, when they agree on accepting it, else None."""
    scanned, looped = decode_both(raw, series)
    return scanned if scanned is not None and looped is not None else None


def test_the_scanner_is_compiled() -> None:
    """scripts/setup builds it (setup.py): without it ingest runs, slower, on the Python loop."""
    assert _fastjson.COMPILED


def test_the_scanner_has_the_contracts_limits() -> None:
    from ingest import _rows, _scan  # noqa: PLC0415 - compiled: imported only here

    assert _scan.LIMITS == {
        "PG_EPOCH_US": _rows.PG_EPOCH_US, "MINUTE_US": _rows.MINUTE_US, "DAY_US": _rows.DAY_US,
        "MIN_TS": p.MIN_TS, "MAX_TS": p.MAX_TS, "MAX_EXACT_INT": p.MAX_EXACT_INT,
        "MAX_SAMPLES": p.MAX_SAMPLES, "MAX_TEXT_BYTES": p.MAX_TEXT_BYTES,
    }  # fmt: skip


def test_without_the_compiled_scanner_the_python_loop_decodes() -> None:
    """An install without a C compiler has no ``ingest._scan``: ingest still decodes."""
    raw = payload([("t0", T0, 1.5, p.Quality.GOOD)])
    script = (
        "import sys; sys.modules['ingest._scan'] = None\n"  # what a failed import looks like
        "from ingest import _fastjson\n"
        "_fastjson.learn_tags(['t0'])\n"
        "fast = _fastjson.decode_packed(sys.stdin.buffer.read(), {'t0': 1})\n"
        "print(_fastjson.COMPILED, fast[1].hex())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=raw, capture_output=True, check=True
    ).stdout.decode()
    assert out.split() == ["False", p.decode_json(raw).envelope.canonical.hex()]


def assert_same(raw: bytes) -> None:
    """Each one-pass decoder declines, or agrees with the full decoder byte for byte."""
    for fast in decode_both(raw, SERIES):
        assert_agrees(raw, fast)


def assert_agrees(raw: bytes, fast: Any) -> None:
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
    expected = Packed.of(rows, SERIES)
    assert packed == expected
    assert list(packed.rollup) == list(expected.rollup)
    assert has_nul == any(isinstance(s.value, str) and "\x00" in s.value for s in full.samples)


# deadline=None: each example runs three decoders; on a loaded machine one example can take
# longer than Hypothesis's default 200 ms
@settings(max_examples=300, deadline=None)
@given(samples)
def test_valid_envelopes_decode_in_one_pass_to_the_same_bytes(items: list[Any]) -> None:
    raw = payload(items)
    scanned, looped = decode_both(raw, SERIES)
    assert looped is not None
    # the scanner declines only escapes, which encode_json writes for control characters,
    # '"' and '\\'
    assert scanned is not None or b"\\" in raw
    assert_same(raw)


@settings(max_examples=500, deadline=None)
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


@settings(max_examples=300, deadline=None)
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
    for bad in [
        twice,
        escaped,
        raw.replace(b'"samples"', b'"seq":8,"samples"'),  # a duplicate after the samples
        raw.replace(b"1.5", b"NaN"),
        raw.replace(b"1.5", b"-Infinity"),
        raw.replace(b"1.5", b"1e999"),
        raw.replace(b"1.5", b"01.5"),
        raw.replace(b"1.5", b"1."),
        raw.replace(b"1.5", b".5"),
        raw.replace(b"1.5", b"+1.5"),
        raw.replace(b"1.5", b"1.5,"),
        raw.replace(b"1.5", b'{"a":1}'),
        raw.replace(b'"t0"', b'"t0\xff"'),
        raw.replace(b'"good"', b'"good" "good"'),
        raw + b"x",
        raw + b"{}",
        b"\xef\xbb\xbf" + raw,
        raw[:-1],
    ]:
        assert bad != raw
        assert decode_both(bad, SERIES) == (None, None)
        assert_same(bad)


#: text that looks like JSON structure, to put inside strings: a scanner that took it for
#: structure would see keys twice, or samples end early
TRICKS = [
    '","seq":8,"',
    '"seq":8',
    "],[",
    "]]}",
    '{"v":1}',
    "\\",
    '\\"',
    "\\u0000",
    "：",
    "\u2028",
    '"samples":[["t0",1,1,"good"]]',
    "\x7f",
    "\U0001f600",
    "\ud800",
]


@settings(max_examples=300, deadline=None)
@given(samples, st.lists(st.sampled_from(TRICKS) | st.text(max_size=8), min_size=1, max_size=4))
def test_strings_that_look_like_json_are_strings(items: list[Any], tricks: list[str]) -> None:
    trick = "".join(tricks)
    with_text = [*items, ("t0", T0, trick, p.Quality.UNCERTAIN)]
    try:
        raw = payload(with_text)
    except p.ProtocolError:  # a lone surrogate cannot travel
        return
    assert_same(raw)
    doc = json.loads(raw)
    doc["device"] = trick
    assert_same(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    # the tricks spliced into the raw text, as a sender that does not escape would
    for at in (b'"seq":7', b'"good"]', b'"samples":[', b"]]"):
        assert_same(raw.replace(at, at + trick.encode("utf-8", "surrogatepass"), 1))


@settings(max_examples=300, deadline=None)
@given(samples, st.data())
def test_other_layouts_of_the_same_envelope_decode_alike(
    items: list[Any], data: st.DataObject
) -> None:
    """Whitespace, field order and number spellings (1e2, 1E+2, 100.0, -0) other senders may
    use: accepted or declined, never decoded otherwise."""
    doc = json.loads(payload(items))
    keys = data.draw(st.permutations(list(doc)))
    doc = {key: doc[key] for key in keys}
    indent = data.draw(st.sampled_from([None, 0, 1, "\t"]))
    raw = json.dumps(doc, ensure_ascii=data.draw(st.booleans()), indent=indent).encode()
    assert_same(raw)
    number = data.draw(st.sampled_from([b"1e2", b"1E+2", b"100.0", b"-0", b"-0.0", b"0.1e-3",
                                        b"123456789012345678", b"9007199254740993.0",
                                        b"0.30000000000000004", b"2.2250738585072014e-308",
                                        b"1" * 30 + b".5"]))  # fmt: skip
    i = data.draw(st.integers(0, len(items) - 1))
    doc["samples"][i][2] = "__number__"
    spaced = json.dumps(doc, indent=indent).encode()
    assert_same(spaced.replace(b'"__number__"', number))


def test_numbers_decode_as_float_does() -> None:
    """The scanner's own float path (digits over a power of ten) against ``float``."""
    for text in [b"0.1", b"0.2", b"0.3", b"123.456", b"-0.0", b"9007199254740991.5",
                 b"4503599627370495.5", b"0.0000000000000001", b"1.7976931348623157", b"5e-324",
                 b"99999999999999999.9", b"8.98846567431158e307", b"0.000001"]:  # fmt: skip
        raw = payload([("t0", T0, 1.5, p.Quality.GOOD)]).replace(b"1.5", text)
        fast = decode_packed(raw, SERIES)
        assert fast is not None
        (bucket,) = fast[2].rollup.values()
        assert bucket[2] == float(text)
        assert_same(raw)


def test_an_unknown_tag_or_series_is_declined_until_learned() -> None:
    raw = payload([("t0", T0, 1.5, p.Quality.GOOD)])
    assert decode_packed(raw, {}) is None
    new = payload([("new.tag", T0, math.pi, p.Quality.BAD)])
    assert decode_packed(new, {"new.tag": 9}) is None
    learn_tags(["new.tag"])
    assert decode_packed(new, {"new.tag": 9}) is not None


def test_the_test_vector_decodes_in_one_pass() -> None:
    vector = json.loads((VECTORS / "data.json").read_text(encoding="utf-8"))
    tags = [item[0] for item in vector["json"]["samples"]]
    learn_tags(tags)
    # as gateways send it (UTF-8 text), and with \u escapes, which only the Python loop takes
    raw = json.dumps(vector["json"], ensure_ascii=False).encode()
    escaped = json.dumps(vector["json"]).encode()
    assert raw != escaped
    fast = decode_packed(raw, dict.fromkeys(tags, 1))
    assert fast is not None
    assert fast[1].hex() == vector["canonical"]
    with compiled(False):
        looped = _fastjson.decode_packed(escaped, dict.fromkeys(tags, 1))
    assert looped is not None
    assert looped[1:] == fast[1:]
    assert_same(raw)
    assert_same(escaped)


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
