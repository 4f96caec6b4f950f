"""The Modbus codec on raw bytes: every type, every byte order, packing, scale and offset."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import BYTE_ORDERS, DataType, Quality, Tag
from edge.drivers.modbus.codec import (
    bytes_to_words,
    compile_tag,
    encode,
    to_big_endian,
    words_to_bytes,
)


def tag(address: str = "hr:0", type: str = "uint16", **fields: object) -> Tag:
    return Tag.model_validate({"name": "t", "address": address, "type": type, **fields})


def decode(t: Tag, words: list[int]) -> tuple[object, Quality]:
    return compile_tag(t).decode(words_to_bytes(words), 0)


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x3F80, 0x0000]),
        ("CDAB", [0x0000, 0x3F80]),
        ("BADC", [0x803F, 0x0000]),
        ("DCBA", [0x0000, 0x803F]),
        ("big", [0x3F80, 0x0000]),
        ("MSW-LE", [0x803F, 0x0000]),
        ("LSW-BE", [0x0000, 0x3F80]),
        ("little", [0x0000, 0x803F]),
    ],
)
def test_float32_one_in_each_order_and_alias(order: str, words: list[int]) -> None:
    assert decode(tag(type="float32", order=order), words) == (1.0, Quality.GOOD)


@pytest.mark.parametrize("order", BYTE_ORDERS[8])
def test_all_eight_64_bit_orders(order: str) -> None:
    value_bytes = bytes(range(1, 9))  # A=0x01 … H=0x08, most significant first
    wire = bytes(value_bytes[ord(letter) - 65] for letter in order)
    got, quality = decode(tag(type="uint64", order=order), bytes_to_words(wire))
    assert got == 0x0102030405060708
    assert quality is Quality.GOOD


def test_the_eight_64_bit_orders_are_the_expected_ones() -> None:
    assert sorted(BYTE_ORDERS[8]) == sorted(
        ["ABCDEFGH", "BADCFEHG", "CDABGHEF", "DCBAHGFE",
         "EFGHABCD", "FEHGBADC", "GHEFCDAB", "HGFEDCBA"]
    )  # fmt: skip
    assert to_big_endian("CDAB") == (2, 3, 0, 1)


def test_integers_signed_and_unsigned() -> None:
    assert decode(tag(type="int16"), [0xFFFE]) == (-2, Quality.GOOD)
    assert decode(tag(type="uint16"), [0xFFFE]) == (65534, Quality.GOOD)
    assert decode(tag(type="int16", order="BA"), [0xFEFF]) == (-2, Quality.GOOD)
    assert decode(tag(type="int32"), [0xFFFF, 0xFFFD]) == (-3, Quality.GOOD)
    assert decode(tag(type="int32", order="CDAB"), [0xFFFD, 0xFFFF]) == (-3, Quality.GOOD)
    assert decode(tag(type="uint32", order="DCBA"), [0x7856, 0x3412]) == (
        0x12345678,
        Quality.GOOD,
    )
    assert decode(tag(type="int64"), [0xFFFF] * 4) == (-1, Quality.GOOD)


def test_eight_bit_values_take_their_half_of_the_register() -> None:
    assert decode(tag(type="int8"), [0x12FE]) == (-2, Quality.GOOD)
    assert decode(tag(type="uint8", byte="high"), [0xFE12]) == (254, Quality.GOOD)
    assert decode(tag(type="int8", byte="high"), [0x8001]) == (-128, Quality.GOOD)


@pytest.mark.parametrize("bit", range(16))
def test_each_bit_of_a_register(bit: int) -> None:
    t = tag(address=f"hr:0.{bit}", type="bool")
    assert decode(t, [1 << bit]) == (True, Quality.GOOD)
    assert decode(t, [0xFFFF ^ (1 << bit)]) == (False, Quality.GOOD)


def test_strings_two_bytes_per_register_cut_at_nul() -> None:
    words = bytes_to_words(b"B-2026\0\0")
    assert decode(tag(type="string", length=8), words) == ("B-2026", Quality.GOOD)
    swapped = [(w >> 8) | (w & 0xFF) << 8 for w in bytes_to_words(b"AB12C")]
    assert decode(tag(type="string", length=5, order="BA"), swapped) == ("AB12C", Quality.GOOD)


def test_string_of_odd_length_uses_half_the_last_register() -> None:
    t = tag(type="string", length=3)
    assert t.modbus_span()[1] == 2
    assert decode(t, [0x4142, 0x43FF]) == ("ABC", Quality.GOOD)


def test_one_byte_per_register_reads_the_low_bytes() -> None:
    t = tag(type="string", length=4, bytes_per_register=1)
    assert t.modbus_span()[1] == 4
    assert decode(t, [0xFF4B, 0x0069, 0x006C, 0x006E]) == ("Kiln", Quality.GOOD)


def test_bytes_are_kept_raw_and_bad_utf8_is_uncertain() -> None:
    assert decode(tag(type="bytes", length=4), [0x0001, 0x00FF]) == (
        b"\x00\x01\x00\xff",
        Quality.GOOD,
    )
    value, quality = decode(tag(type="string", length=2), [0xC328])
    assert quality is Quality.UNCERTAIN
    assert value == "\ufffd("


def test_chinese_text_in_utf8() -> None:
    data = "窑炉".encode()
    assert decode(tag(type="string", length=6), bytes_to_words(data)) == ("窑炉", Quality.GOOD)


def test_scale_and_offset() -> None:
    assert decode(tag(type="uint16", scale=0.1, offset=-40), [1234]) == (
        pytest.approx(83.4),
        Quality.GOOD,
    )
    value, _ = decode(tag(type="int16", scale=2), [3])
    assert value == 6.0
    assert isinstance(value, float)
    assert decode(tag(type="uint16"), [3])[0].__class__ is int


def test_nan_and_infinity_are_uncertain() -> None:
    nan = bytes_to_words(struct.pack(">f", math.nan))
    value, quality = decode(tag(type="float32"), nan)
    assert math.isnan(value)  # type: ignore[arg-type]
    assert quality is Quality.UNCERTAIN
    inf = bytes_to_words(struct.pack(">d", math.inf))
    assert decode(tag(type="float64"), inf) == (math.inf, Quality.UNCERTAIN)


def test_decoding_at_an_offset_inside_a_block() -> None:
    block = words_to_bytes([0xDEAD, 0xBEEF, 0x4049, 0x0FDB, 0xDEAD])
    value, _ = compile_tag(tag(type="float32")).decode(block, 4)
    assert value == pytest.approx(3.1415927)


def test_encoding_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        encode(tag(type="string", length=2), "abc")
    with pytest.raises(TypeError, match="needs a number"):
        encode(tag(type="float32"), "x")


# --- round trips -----------------------------------------------------------------------------

_RANGES = {
    DataType.INT8: st.integers(-(2**7), 2**7 - 1),
    DataType.UINT8: st.integers(0, 2**8 - 1),
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT64: st.integers(0, 2**64 - 1),
    DataType.FLOAT32: st.floats(width=32, allow_nan=False, allow_infinity=False),
    DataType.FLOAT64: st.floats(allow_nan=False, allow_infinity=False),
}


@st.composite
def numeric_tags(draw: st.DrawFn) -> tuple[Tag, object]:
    kind = draw(st.sampled_from(sorted(_RANGES)))
    fields: dict[str, object] = {}
    if kind.size == 1:
        fields["byte"] = draw(st.sampled_from(["low", "high"]))
    elif kind.size is not None:
        fields["order"] = draw(st.sampled_from(BYTE_ORDERS[kind.size]))
    return tag(type=kind.value, **fields), draw(_RANGES[kind])


@given(numeric_tags())
def test_numbers_round_trip_in_every_order(case: tuple[Tag, object]) -> None:
    t, value = case
    assert isinstance(value, int | float)
    words = encode(t, value)
    assert len(words) == t.modbus_span()[1]
    assert decode(t, words) == (value, Quality.GOOD)


@given(
    st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), max_size=20),
    st.sampled_from(["AB", "BA"]),
    st.sampled_from([1, 2]),
)
def test_strings_round_trip(text: str, order: str, per_register: int) -> None:
    fields: dict[str, object] = {"length": 20, "bytes_per_register": per_register}
    if per_register == 2:
        fields["order"] = order
    t = tag(type="string", **fields)
    assert decode(t, encode(t, text)) == (text, Quality.GOOD)


@given(st.binary(min_size=1, max_size=9), st.sampled_from(["AB", "BA"]))
def test_bytes_round_trip(data: bytes, order: str) -> None:
    t = tag(type="bytes", length=len(data), order=order)
    assert decode(t, encode(t, data)) == (data, Quality.GOOD)
