"""DataValue → sample, without a server: status classes, timestamps, types that do not fit."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from edge import Quality, Tag
from edge.drivers.opcua.convert import TagCodec, quality_of, timestamp_ns

EDGE = 1_795_000_000_123_456_789


def codec(type_: str, **extra: Any) -> TagCodec:
    return TagCodec(
        Tag.model_validate({"name": "t", "address": "ns=2;s=T", "type": type_, **extra})
    )


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        ("Good", Quality.GOOD),
        ("GoodClamped", Quality.GOOD),
        ("UncertainLastUsableValue", Quality.UNCERTAIN),
        ("UncertainSensorNotAccurate", Quality.UNCERTAIN),
        ("BadSensorFailure", Quality.BAD),
        ("BadNodeIdUnknown", Quality.BAD),
        ("BadCommunicationError", Quality.BAD),
    ],
)
def test_status_code_classes(code: str, quality: Quality) -> None:
    assert quality_of(getattr(ua.StatusCodes, code)) is quality


@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1)))
def test_timestamps_are_exact_to_the_microsecond(stamp: dt.datetime) -> None:
    aware = stamp.replace(tzinfo=dt.UTC)
    ns = timestamp_ns(aware)
    assert ns is not None
    assert ns % 1000 == 0
    back = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)
    assert back == aware
    assert timestamp_ns(stamp) == ns  # naive is taken as UTC


def test_a_bad_value_is_dropped_and_keeps_its_timestamps() -> None:
    stamp = dt.datetime(2026, 11, 23, 5, 0, 1, tzinfo=dt.UTC)
    sample = codec("float64").sample(ua.StatusCodes.BadSensorFailure, 12.5, stamp, EDGE)
    assert (sample.value, sample.quality) == (None, Quality.BAD)
    assert sample.source_ts == 1_795_410_001 * 10**9
    assert sample.edge_ts == EDGE


def test_uncertain_values_are_kept() -> None:
    sample = codec("uint32").sample(ua.StatusCodes.UncertainLastUsableValue, 7, None, EDGE)
    assert (sample.value, sample.quality, sample.source_ts) == (7, Quality.UNCERTAIN, None)


@pytest.mark.parametrize(
    ("type_", "extra", "value", "out", "quality"),
    [
        ("float32", {}, 1.5, 1.5, Quality.GOOD),
        ("int16", {}, -3, -3, Quality.GOOD),
        ("uint64", {}, 2**64 - 1, 2**64 - 1, Quality.GOOD),
        ("int32", {"scale": 0.1, "offset": 1.0}, 20, 3.0, Quality.GOOD),
        ("bool", {}, True, True, Quality.GOOD),
        ("string", {"length": 8}, "ok", "ok", Quality.GOOD),
        ("bytes", {"length": 4}, b"\x00\x01", b"\x00\x01", Quality.GOOD),
        # the server and the config disagree: kept, but Uncertain
        ("string", {"length": 2}, "toolong", "to", Quality.UNCERTAIN),
        ("float64", {}, "12.5", "12.5", Quality.UNCERTAIN),
        ("bool", {}, 1, 1, Quality.UNCERTAIN),
        ("int32", {}, True, True, Quality.UNCERTAIN),
        ("int32", {}, 2.5, 2.5, Quality.UNCERTAIN),
        (
            "string",
            {"length": 8},
            ua.LocalizedText("x"),
            str(ua.LocalizedText("x")),
            Quality.UNCERTAIN,
        ),
    ],
)
def test_values_against_the_configured_type(
    type_: str, extra: dict[str, Any], value: Any, out: Any, quality: Quality
) -> None:
    sample = codec(type_, **extra).sample(0, value, None, EDGE)
    assert sample.value == out
    assert type(sample.value) is type(out)
    assert sample.quality is quality


def test_nan_and_infinity_are_uncertain() -> None:
    for value in (math.nan, math.inf, -math.inf):
        sample = codec("float32").sample(0, value, None, EDGE)
        assert sample.quality is Quality.UNCERTAIN
    assert codec("float64").sample(0, None, None, EDGE).quality is Quality.UNCERTAIN
