"""The value function, the profiles and the register codec: pure, no servers."""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import simulators
from simulators import EPOCH, PROFILES, State
from simulators._registers import register_map
from simulators._values import PERIOD_SEGMENTS, SEGMENT, StateMix, timeline

Decoder = Callable[[simulators.TagSpec, list[int]], simulators.Value]
T = EPOCH + 200 * 86400 + 12345.25
ALL_TAGS = [(p.name, t.name) for p in PROFILES.values() for t in p.tags]


def test_the_pilot_industries_have_a_profile_each() -> None:
    assert set(PROFILES) == {
        "cnc", "injection", "kiln", "extrusion", "reflow", "meter", "compressor"
    }  # fmt: skip


@pytest.mark.parametrize(("profile", "tag"), ALL_TAGS)
def test_a_value_depends_only_on_its_arguments_and_the_whole_second(profile: str, tag: str) -> None:
    first = simulators.value(7, profile, "m-1", tag, T)
    assert simulators.value(7, profile, "m-1", tag, T) == first
    assert simulators.value(7, profile, "m-1", tag, math.floor(T) + 0.999) == first
    assert simulators.values(7, profile, "m-1", T)[tag] == first


@pytest.mark.parametrize(("profile", "tag"), ALL_TAGS)
def test_raw_values_fit_their_type(profile: str, tag: str) -> None:
    spec = PROFILES[profile].tag(tag)
    for k in range(0, 86400 * 3, 3607):
        raw = simulators.value(3, profile, "m-2", tag, T + k)
        if spec.type == "bool":
            assert isinstance(raw, bool)
        elif spec.type == "string":
            assert isinstance(raw, str)
            assert len(raw.encode("ascii")) <= (spec.length or 0)
        elif spec.type.startswith("float"):
            assert isinstance(raw, float)
            if spec.type == "float32":
                assert struct.unpack(">f", struct.pack(">f", raw))[0] == raw
        else:
            assert isinstance(raw, int)
            bits = {"16": 16, "32": 32, "64": 64}[spec.type[-2:]]
            low, high = (
                (0, 2**bits - 1)
                if spec.type.startswith("u")
                else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            assert low <= raw <= high


def test_machines_and_seeds_differ() -> None:
    spindle = {
        (seed, machine): simulators.value(seed, "cnc", machine, "spindle_load", T)
        for seed in (1, 2)
        for machine in ("cnc-01", "cnc-02")
    }
    assert len(set(spindle.values())) == 4


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_machines_go_through_their_states(name: str) -> None:
    prof = PROFILES[name]
    seen = {
        simulators.state(11, name, f"m{i}", T + k * SEGMENT)
        for i in range(5)
        for k in range(PERIOD_SEGMENTS)
    }
    expected = {State.RUNNING, State.IDLE, State.OFF} | ({State.ALARM} if prof.mix.alarm else set())
    assert seen == expected
    for k in range(0, PERIOD_SEGMENTS, 7):
        t = T + k * SEGMENT
        state = simulators.state(11, name, "m", t)
        assert simulators.value(11, name, "m", "state", t) == int(state)
        if "running" in {tag.name for tag in prof.tags}:
            assert simulators.value(11, name, "m", "running", t) == (state is State.RUNNING)
        if "alarm_code" in {tag.name for tag in prof.tags}:
            code = simulators.value(11, name, "m", "alarm_code", t)
            assert (code != 0) == (state is State.ALARM)


def test_the_state_pattern_repeats_daily_and_time_adds_up() -> None:
    line = timeline(5, "kiln-1", StateMix())
    assert line.state_at(17 * SEGMENT) is line.state_at(17 * SEGMENT + 86400 * 9)
    t = EPOCH + 86400 * 3 + 4321
    assert sum(line.seconds_in(s, t) for s in State) == t - EPOCH
    assert all(line.seconds_in(s, EPOCH - 100) == 0 for s in State)


COUNTERS = [(p.name, t.name) for p in PROFILES.values() for t in p.tags if t.group == "counters"]


@pytest.mark.parametrize(("profile", "tag"), COUNTERS)
@given(offsets=st.lists(st.integers(min_value=0, max_value=400 * 86400), min_size=2, max_size=8))
def test_counters_never_go_down(profile: str, tag: str, offsets: list[int]) -> None:
    times = sorted(EPOCH + o for o in offsets)
    seen = [simulators.value(9, profile, "m-3", tag, t) for t in times]
    if tag == "reactive_energy":  # a signed total: exported reactive energy counts down
        return
    assert seen == sorted(seen)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_register_maps_are_realistic(name: str) -> None:
    """Gaps between blocks, read-only and read-write areas, no overlaps."""
    prof = PROFILES[name]
    rmap = register_map(prof)  # raises on overlap
    for table, cells in rmap.words.items():
        if cells:
            span = range(min(cells), max(cells) + 1)
            assert len(cells) < len(span), f"{name} {table}: no gap between blocks"
    assert any(t.writable for t in prof.tags) or name == "meter"
    assert any(not t.writable for t in prof.tags)
    assert all(t.table in ("hr", "co") for t in prof.tags if t.writable)


def test_every_type_and_byte_order_is_served_somewhere() -> None:
    kinds = {(t.type, t.order) for p in PROFILES.values() for t in p.tags}
    for order in ("ABCD", "CDAB", "BADC", "DCBA"):
        assert ("float32", order) in kinds
    for wanted in (
        ("int16", None), ("uint16", None), ("string", None), ("bool", None),
        ("float64", "ABCDEFGH"), ("float64", "GHEFCDAB"), ("float64", "HGFEDCBA"),
        ("int64", "ABCDEFGH"), ("uint64", "GHEFCDAB"), ("int32", "CDAB"), ("uint32", "ABCD"),
    ):  # fmt: skip
        assert wanted in kinds
    tables = {t.table for p in PROFILES.values() for t in p.tags}
    assert tables == {"hr", "ir", "co", "di"}
    assert any(t.bit is not None for p in PROFILES.values() for t in p.tags)


def _spec(type_: str, order: str | None, length: int | None = None) -> simulators.TagSpec:
    return simulators.TagSpec("x", type_, "hr:0", simulators._signals.Const(0), order, length)


_NUMBERS = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint64": st.integers(0, 2**64 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
}
_ORDERS = ("AB", "BA", "ABCD", "CDAB", "BADC", "DCBA", "ABCDEFGH", "GHEFCDAB", "BADCFEHG",
           "HGFEDCBA")  # fmt: skip
CASES = [
    (type_, order)
    for type_ in _NUMBERS
    for order in _ORDERS
    if len(order) == {"16": 2, "32": 4, "64": 8}[type_[-2:]]
]


@pytest.mark.parametrize(("type_", "order"), CASES)
@given(data=st.data())
def test_encoding_agrees_with_an_independent_decoder(
    type_: str, order: str, data: st.DataObject, decode_registers: Decoder
) -> None:
    spec = _spec(type_, order)
    x = data.draw(_NUMBERS[type_])
    registers = simulators.encode(spec, x)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert len(registers) == spec.count
    assert decode_registers(spec, registers) == x
    assert simulators.decode(spec, registers) == x


def test_byte_orders_put_the_bytes_where_their_letters_say() -> None:
    value = struct.unpack(">f", bytes([0x41, 0x42, 0x43, 0x44]))[0]  # bytes A B C D
    assert simulators.encode(_spec("float32", "ABCD"), value) == [0x4142, 0x4344]
    assert simulators.encode(_spec("float32", "CDAB"), value) == [0x4344, 0x4142]
    assert simulators.encode(_spec("float32", "BADC"), value) == [0x4241, 0x4443]
    assert simulators.encode(_spec("float32", "DCBA"), value) == [0x4443, 0x4241]
    big = int.from_bytes(bytes(range(1, 9)), "big")
    assert simulators.encode(_spec("uint64", "GHEFCDAB"), big) == [0x0708, 0x0506, 0x0304, 0x0102]


def test_strings_are_packed_high_byte_first_and_padded() -> None:
    spec = _spec("string", None, length=7)
    assert simulators.encode(spec, "ABC") == [0x4142, 0x4300, 0, 0]
    assert simulators.decode(spec, [0x4142, 0x4300, 0, 0]) == "ABC"


def test_value_faults() -> None:
    f32 = _spec("float32", "ABCD")
    assert math.isnan(float(simulators.faulty(f32, 1.5, "nan")))
    assert simulators.faulty(_spec("uint16", None), 5, "nan") == 5
    assert simulators.faulty(_spec("int16", None), 5, "out_of_range") == 32767
    assert simulators.faulty(f32, 1.5, "out_of_range") > 3e38
    assert simulators.faulty(f32, 1.5, None) == 1.5


def test_unknown_names_raise_the_package_errors() -> None:
    with pytest.raises(simulators.UnknownProfile, match="lathe"):
        simulators.value(1, "lathe", "m", "x", T)
    with pytest.raises(simulators.UnknownTag, match="'cnc' has no tag 'torque'"):
        simulators.value(1, "cnc", "m", "torque", T)
    assert issubclass(simulators.UnknownTag, simulators.SimulatorError)


def test_counters_follow_the_forced_state_and_keep_it_once_cleared() -> None:
    now = [math.floor(time.time()) - 7200 + 0.5]
    machine = simulators.Machine("cnc-01", "cnc", 7, clock=lambda: now[0])
    spec = machine.profile.tag("part_count")  # one part per 45 s of running

    def parts() -> int:
        return int(machine.raw([spec], now[0])["part_count"])

    first = parts()
    machine.force(simulators.State.IDLE)
    now[0] += 3600
    assert parts() == first  # an hour idle makes nothing
    machine.force(simulators.State.RUNNING)
    now[0] += 450
    assert parts() == first + 10
    machine.force(None)
    assert parts() == first + 10  # back to the pattern, from what the forced time made
    assert machine.raw([machine.profile.tag("state")], now[0])["state"] == int(
        simulators.state(7, "cnc", "cnc-01", now[0])
    )
