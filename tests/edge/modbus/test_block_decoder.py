"""The compiled decoders decode a whole request exactly as the reference codec does tag by tag.

:class:`BlockDecoder` packs, permutes and unpacks a request's registers at once; the reference
is :meth:`TagCodec.decode` on each tag's offset (and :func:`decode_bits` for bits), which the
rest of ``test_codec.py`` checks against hand-made wire bytes.
"""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from edge import BYTE_ORDERS, DataType, Quality, Tag
from edge.drivers.modbus.codec import (
    BitDecoder,
    BlockDecoder,
    TagCodec,
    compile_tag,
    decode_bits,
    words_to_bytes,
)

NUMBERS = [t for t in DataType if t.numeric and t.size]


def reference(tags: list[TagCodec], start: int, words: list[int]) -> list[tuple[object, Quality]]:
    raw = words_to_bytes(words)
    return [tag.decode(raw, 2 * (tag.address - start)) for tag in tags]


def same(got: list[tuple[object, Quality]], want: list[tuple[object, Quality]]) -> bool:
    """Equal value by value, type included, NaN equal to NaN."""
    return len(got) == len(want) and all(
        type(g) is type(w) and (g == w or (g != g and w != w)) and gq is wq  # noqa: PLR0124
        for (g, gq), (w, wq) in zip(got, want, strict=True)
    )


@st.composite
def register_tag(draw: st.DrawFn, index: int, start: int, count: int) -> Tag:
    """Any tag that fits in registers ``start`` … ``start + count - 1``: numbers of every type
    and order (8-bit ones in either half), register bits, strings and bytes, scaled or not;
    tags may overlap, as a status word and its bits do."""
    kind = draw(st.sampled_from(["number", "number", "number", "byte", "bit", "text"]))
    fields: dict[str, object] = {"name": f"t{index}"}
    if kind == "bit":
        address = draw(st.integers(start, start + count - 1))
        return Tag.model_validate(
            {**fields, "type": "bool", "address": f"hr:{address}.{draw(st.integers(0, 15))}"}
        )
    if kind == "text":
        per_register = draw(st.sampled_from([1, 2]))
        length = draw(st.integers(1, min(2 * count, 12) if per_register == 2 else count))
        span = -(-length // per_register)
        fields |= {"type": draw(st.sampled_from(["string", "bytes"])), "length": length}
        fields["bytes_per_register"] = per_register
        if per_register == 2:
            fields["order"] = draw(st.sampled_from(["AB", "BA"]))
    else:
        types = [t for t in NUMBERS if (t.size == 1) == (kind == "byte")]
        dtype = draw(st.sampled_from([t for t in types if -(-t.size // 2) <= count]))
        span = -(-dtype.size // 2)
        fields["type"] = dtype.value
        if dtype.size == 1:
            fields["byte"] = draw(st.sampled_from(["low", "high"]))
        elif draw(st.booleans()):
            fields["order"] = draw(st.sampled_from(BYTE_ORDERS[dtype.size]))
        if draw(st.booleans()):
            fields["scale"] = draw(st.sampled_from([0.1, 0.001, 2.0, -1.5]))
            fields["offset"] = draw(st.sampled_from([0.0, 10.0, -273.15]))
    address = draw(st.integers(start, start + count - span))
    return Tag.model_validate({**fields, "address": f"hr:{address}"})


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[TagCodec], int, int, list[int]]:
    start = draw(st.integers(0, 1000))
    count = draw(st.integers(1, 125))
    n = draw(st.integers(1, 40))
    tags = [compile_tag(draw(register_tag(i, start, count))) for i in range(n)]
    tags.sort(key=lambda t: (t.address, t.end))  # as the planner lists them
    words = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    return tags, start, count, words


@settings(max_examples=400)
@given(blocks())
def test_a_block_decodes_as_tag_by_tag(case: tuple[list[TagCodec], int, int, list[int]]) -> None:
    tags, start, count, words = case
    decoder = BlockDecoder(tags, start, count)
    values, qualities = decoder.decode([*words, 0x1234])  # extra words are ignored
    assert decoder.names == tuple(t.name for t in tags)
    assert same(list(zip(values, qualities, strict=True)), reference(tags, start, words))


def test_every_type_in_every_order_side_by_side() -> None:
    """One block holding each numeric type in each of its orders, back to back, with gaps."""
    tags, address, words = [], 10, []
    for dtype in NUMBERS:
        orders = [None] if dtype.size == 1 else BYTE_ORDERS[dtype.size]
        for order in orders:
            fields = {"name": f"t{len(tags)}", "type": dtype.value, "address": f"hr:{address}"}
            if order:
                fields["order"] = order
            tags.append(compile_tag(Tag.model_validate(fields)))
            span = -(-dtype.size // 2)
            address += span + len(tags) % 3  # 0, 1 or 2 registers of gap
    count = address - 10
    words = [(i * 7919 + 13) & 0xFFFF for i in range(count)]
    values, qualities = BlockDecoder(tags, 10, count).decode(words)
    assert same(list(zip(values, qualities, strict=True)), reference(tags, 10, words))


def test_nan_infinity_and_bad_text_are_uncertain() -> None:
    tags = [
        compile_tag(Tag.model_validate(t))
        for t in (
            {"name": "nan", "type": "float32", "address": "hr:0"},
            {"name": "inf", "type": "float64", "address": "hr:2", "order": "HGFEDCBA"},
            {"name": "ok", "type": "float32", "address": "hr:6", "scale": 2.0},
            {"name": "text", "type": "string", "address": "hr:8", "length": 2},
        )
    ]
    words = [
        *struct.unpack(">2H", struct.pack(">f", math.nan)),
        *struct.unpack(">4H", struct.pack("<d", math.inf)),
        *struct.unpack(">2H", struct.pack(">f", 1.5)),
        0xFF41,
    ]
    decoder = BlockDecoder(tags, 0, 9)
    values, qualities = decoder.decode(words)
    assert math.isnan(values[0])  # type: ignore[arg-type]
    assert values[1:3] == [math.inf, 3.0]
    assert qualities == [Quality.UNCERTAIN, Quality.UNCERTAIN, Quality.GOOD, Quality.UNCERTAIN]
    # the shared all-Good list was not changed by that
    assert decoder.decode([0] * 9)[1] == [Quality.GOOD] * 4


@given(st.lists(st.booleans(), min_size=1, max_size=2000), st.data())
def test_bits_decode_as_bit_by_bit(bits: list[bool], data: st.DataObject) -> None:
    indices = data.draw(st.lists(st.integers(0, len(bits) - 1), min_size=1, unique=True))
    tags = [
        compile_tag(Tag.model_validate({"name": f"c{i}", "type": "bool", "address": f"co:{i + 5}"}))
        for i in sorted(indices)
    ]
    values, qualities = BitDecoder(tags, 5).decode(bits)
    assert list(zip(values, qualities, strict=True)) == [
        decode_bits(bits, t.address - 5) for t in tags
    ]
