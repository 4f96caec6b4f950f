"""Samples, their JSON form, and the bounded stream the gateway consumes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge import Batch, ConnectivityEvent, Quality, Sample, SampleStream, StreamClosed
from edge._samples import bad_samples, format_ts, make_samples

ROOT = Path(__file__).resolve().parents[2]
TS = 1_795_000_000_123_456_789  # 2026-11-18T11:06:40.123456789Z


def test_sample_json_is_plain_and_timestamped_to_the_microsecond() -> None:
    sample = Sample("zone1_temp", 812.5, Quality.GOOD, edge_ts=TS)
    assert sample.ts == TS
    assert sample.to_json() == {
        "tag": "zone1_temp",
        "value": 812.5,
        "quality": "good",
        "ts": "2026-11-18T11:06:40.123456Z",
    }
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"


def test_source_timestamp_wins_and_odd_values_stay_json() -> None:
    with_source = Sample("t", float("nan"), Quality.UNCERTAIN, edge_ts=TS, source_ts=TS - 10**9)
    out = with_source.to_json()
    assert with_source.ts == TS - 10**9
    assert out["value"] is None
    assert out["ts"] == "2026-11-18T11:06:39.123456Z"
    assert out["edge_ts"] == "2026-11-18T11:06:40.123456Z"
    json.dumps(out, allow_nan=False)
    assert Sample("b", b"\x01\xff", Quality.GOOD, TS).to_json()["value"] == "01ff"


def test_bad_samples_carry_no_value() -> None:
    samples = bad_samples(["a", "b"], TS)
    assert [(s.tag, s.value, s.quality) for s in samples] == [
        ("a", None, Quality.BAD),
        ("b", None, Quality.BAD),
    ]


async def test_stream_applies_backpressure_and_drains_after_close() -> None:
    stream = SampleStream(maxsize=2)
    batch = Batch("kiln-1", "process", (Sample("t", 1, Quality.GOOD, TS),))
    event = ConnectivityEvent("kiln-1", up=False, ts=TS, reason="timeout")
    await stream.put(batch)
    await stream.put(event)
    third = asyncio.create_task(stream.put(batch))
    await asyncio.sleep(0.01)
    assert not third.done()  # full: the producer waits, nothing is dropped
    assert await stream.get() is batch
    await third
    stream.close()
    with pytest.raises(StreamClosed):
        await stream.put(batch)
    assert [item async for item in stream] == [event, batch]
    assert stream.stats.put == 3
    assert stream.stats.samples == 2
    assert stream.stats.waited == 1


async def test_close_of_a_full_stream_does_not_block() -> None:
    stream = SampleStream(maxsize=1)
    batch = Batch("d", "g", ())
    await stream.put(batch)
    stream.close()
    assert [item async for item in stream] == [batch]


def test_stream_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SampleStream(maxsize=0)


def test_the_samples_module_is_a_light_leaf() -> None:
    code = (
        "import sys, edge._samples\n"
        "heavy = ('pydantic', 'pymodbus', 'asyncua', 'yaml', 'serial')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_samples_made_in_bulk_are_ordinary_frozen_samples() -> None:
    made = make_samples(["a", "b"], [1.5, None], [Quality.GOOD, Quality.BAD], 7)
    assert made == [Sample("a", 1.5, Quality.GOOD, 7), Sample("b", None, Quality.BAD, 7)]
    assert made[0].source_ts is None
    assert made[0].ts == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].value = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="zip"):
        make_samples(["a"], [1, 2], [Quality.GOOD], 7)
