"""The identifier codec: normalisation, every error part, the 255-byte limit, round trips."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

import identifiers
from identifiers import IdentifierError, parse, parse_prefix


def test_normalisation() -> None:
    ident = parse("88.709.ABC-1/Kiln.Line/01")
    assert (ident.prefix, ident.suffix) == ("88.709.abc-1", "Kiln.Line/01")  # suffix keeps case
    assert str(ident) == "88.709.abc-1/Kiln.Line/01"
    assert (ident.node, ident.enterprise) == ("709", "abc-1")
    decomposed = "88.709.911/cafe\u0301"
    assert parse(decomposed) == parse("88.709.911/café")  # NFC
    assert parse("88.709.911.2.x/a").enterprise == "911.2.x"
    assert parse_prefix("88.1021.150") == "88.1021.150"
    assert identifiers.Identifier.under("88.709.911", "d/1") == parse("88.709.911/d/1")
    parts = parse("88.709.911/设备/01").as_dict()
    assert parts["utf8_bytes"] == len("88.709.911/设备/01".encode())
    assert parts["prefix_segments"] == ["88", "709", "911"]


ERRORS = [
    ("", "handle", "is empty"),
    ("88.709.911", "handle", "no '/'"),
    ("88.709.911/" + "x" * 245, "handle", "255 bytes"),
    ("/x", "prefix", "is empty"),
    ("88." + "1" * 62 + "/x", "prefix", "64 characters"),
    ("88.709. 911/x", "prefix", "whitespace"),
    ("88.709.9\u200b11/x", "prefix", "U+200B"),
    ("86.709.911/x", "prefix", "must start with '88'"),
    ("88.709/x", "prefix", "88.<node>.<enterprise>"),
    ("88.7a9.911/x", "prefix.node", "numeric node code"),
    ("88..911/x", "prefix.node", "numeric node code"),
    ("88.709.9_1/x", "prefix.enterprise", "letters, digits"),
    ("88.709.-911/x", "prefix.enterprise", "letters, digits"),
    ("88.709.911.a-/x", "prefix.segment[3]", "letters, digits"),
    ("88.709.911./x", "prefix.segment[3]", "letters, digits"),
    ("88.709.911/", "suffix", "is empty"),
    ("88.709.911/a b", "suffix", "whitespace"),
    ("88.709.911/a\x00b", "suffix", "U+0000"),
    ("88.709.911/a\u202eb", "suffix", "U+202E"),
    ("88.709.911//a", "suffix", "begin or end with '/'"),
    ("88.709.911/a/", "suffix", "begin or end with '/'"),
    ("88.709.911/a/../b", "suffix", "'..'"),
    ("88.709.911/./b", "suffix", "'..'"),
    (" 88.709.911/a", "prefix", "whitespace"),
]


@pytest.mark.parametrize(("text", "part", "reason"), ERRORS)
def test_every_error_names_its_part(text: str, part: str, reason: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse(text)
    assert caught.value.part == part
    assert reason in caught.value.reason
    assert caught.value.value == text
    assert isinstance(caught.value, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(IdentifierError) as caught:
        parse(88)  # type: ignore[arg-type]
    assert caught.value.part == "handle"


def test_a_lone_surrogate_is_refused_and_not_echoed_raw() -> None:
    # JSON's "\ud800" escape decodes to one; its UTF-8 encoding fails, and so would any
    # answer or log line quoting it raw
    with pytest.raises(IdentifierError) as caught:
        parse("\ud80088.709.911/gw.1")
    assert (caught.value.part, caught.value.reason) == ("handle", "is not valid Unicode")
    str(caught.value).encode()


def test_255_bytes_counted_in_utf8_after_nfc() -> None:
    prefix = "88.709.911/"  # 11 bytes
    fits = prefix + "设" * 81 + "a"  # 11 + 243 + 1 = 255
    assert len(fits.encode()) == 255
    assert str(parse(fits)) == fits
    over = fits + "b"
    assert len(over) == 94  # far under 255 characters, yet over 255 bytes
    with pytest.raises(IdentifierError, match="255 bytes") as caught:
        parse(over)
    assert caught.value.part == "handle"
    # NFC first: 'e' + combining acute is 3 bytes, 'é' is 2, so this one fits once normalised
    combining = prefix + "é" * 121 + "e\u0301"
    assert len(combining.encode()) == 11 + 242 + 3
    assert len(parse(combining).suffix.encode()) == 244


_segment = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_suffix_char = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
    blacklist_characters="/",
)
_suffix_segment = st.text(_suffix_char, min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not any(c.isspace() for c in s)
)


@given(
    node=st.from_regex(r"[0-9]{1,6}", fullmatch=True),
    enterprise=st.lists(_segment, min_size=1, max_size=3),
    suffix=st.lists(_suffix_segment, min_size=1, max_size=4),
    upper=st.booleans(),
)
def test_round_trip(node: str, enterprise: list[str], suffix: list[str], upper: bool) -> None:
    prefix = ".".join(["88", node, *enterprise])
    text = f"{prefix.upper() if upper else prefix}/{'/'.join(suffix)}"
    if len(unicodedata.normalize("NFC", text).encode()) > 255:
        with pytest.raises(IdentifierError):
            parse(text)
        return
    ident = parse(text)
    assert ident.prefix == prefix
    assert parse(str(ident)) == ident
    assert str(parse(str(ident))) == str(ident)
