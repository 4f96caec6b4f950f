"""The request planner: pure, checked on examples and on random tag sets."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import ModbusTable
from edge.drivers.modbus.codec import TagCodec
from edge.drivers.modbus.planner import Limits, PlanError, Request, plan

HR, CO, IR, DI = (
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.COIL,
    ModbusTable.INPUT_REGISTER,
    ModbusTable.DISCRETE_INPUT,
)


def _never(raw: bytes, off: int) -> None:
    raise AssertionError("the planner must not decode")


def codec(name: str, address: int, count: int = 1, table: ModbusTable = HR) -> TagCodec:
    return TagCodec(name, table, address, count, _never)


def spans(requests: list[Request]) -> list[tuple[int, int, int]]:
    return [(r.function_code, r.start, r.count) for r in requests]


def test_adjacent_tags_merge_into_one_request() -> None:
    tags = [codec("a", 0, 2), codec("b", 2, 2), codec("c", 4, 4)]
    assert spans(plan(tags)) == [(3, 0, 8)]


def test_gaps_are_filled_up_to_max_gap() -> None:
    tags = [codec("a", 0), codec("b", 4), codec("c", 9)]
    assert spans(plan(tags, Limits(max_gap=3))) == [(3, 0, 5), (3, 9, 1)]
    assert spans(plan(tags, Limits(max_gap=4))) == [(3, 0, 10)]
    assert spans(plan(tags, Limits(max_gap=0))) == [(3, 0, 1), (3, 4, 1), (3, 9, 1)]


def test_requests_stay_within_125_registers_and_2000_bits() -> None:
    registers = [codec(f"r{i}", i * 2, 2) for i in range(200)]
    assert spans(plan(registers)) == [(3, 0, 124), (3, 124, 124), (3, 248, 124), (3, 372, 28)]
    bits = [codec(f"b{i}", i, table=CO) for i in range(4500)]
    assert spans(plan(bits)) == [(1, 0, 2000), (1, 2000, 2000), (1, 4000, 500)]


def test_tables_are_planned_apart_in_function_code_order() -> None:
    tags = [
        codec("h", 0),
        codec("i", 1, table=IR),
        codec("c", 0, table=CO),
        codec("d", 5, table=DI),
    ]
    assert spans(plan(tags)) == [(1, 0, 1), (2, 5, 1), (3, 0, 1), (4, 1, 1)]


def test_never_reads_through_an_unreadable_address() -> None:
    tags = [codec("a", 0), codec("b", 3)]
    assert spans(plan(tags, unreadable=[(HR, 2, 2)])) == [(3, 0, 1), (3, 3, 1)]
    assert spans(plan(tags, unreadable=[(IR, 2, 2)])) == [(3, 0, 4)]


def test_tags_sharing_a_register_share_the_request() -> None:
    tags = [codec("bit0", 10), codec("bit1", 10), codec("f", 10, 2)]
    (request,) = plan(tags)
    assert (request.start, request.count) == (10, 2)
    assert [t.name for t in request.tags] == ["bit0", "bit1", "f"]


def test_a_tag_longer_than_a_request_is_refused() -> None:
    with pytest.raises(PlanError, match="'s' spans 10 registers, more than the 8"):
        plan([codec("s", 0, 10)], Limits(max_registers=8))


# --- properties --------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[TagCodec], Limits, list[tuple[ModbusTable, int, int]]]:
    table = draw(st.sampled_from([HR, CO]))
    limits = Limits(
        max_registers=draw(st.integers(4, 125)),
        max_bits=draw(st.integers(16, 2000)),
        max_gap=draw(st.integers(0, 20)),
    )
    holes = draw(
        st.lists(st.tuples(st.integers(0, 600), st.integers(0, 5)), max_size=3).map(
            lambda hs: [(table, first, first + n) for first, n in hs]
        )
    )
    n = draw(st.integers(1, 40))
    tags = []
    for i in range(n):
        count = 1 if table.is_bits else draw(st.sampled_from([1, 1, 2, 4]))
        address = draw(st.integers(0, 600))
        if any(first <= address + count - 1 and address <= last for _, first, last in holes):
            continue  # the config model forbids tags in unreadable ranges
        tags.append(codec(f"t{i}", address, count, table))
    return tags, limits, holes


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_tag_is_read_exactly_once_within_the_limits(
    scenario: tuple[list[TagCodec], Limits, list[tuple[ModbusTable, int, int]]],
) -> None:
    tags, limits, holes = scenario
    requests = plan(tags, limits, holes)
    covered = [t.name for r in requests for t in r.tags]
    assert sorted(covered) == sorted(t.name for t in tags)
    for request in requests:
        assert 1 <= request.count <= limits.size(request.table)
        assert request.tags[0].address == request.start
        assert max(t.end for t in request.tags) == request.end
        for t in request.tags:
            assert request.start <= t.address
            assert t.end <= request.end
        for _, first, last in holes:
            assert last < request.start or request.end < first
        used = {a for t in request.tags for a in range(t.address, t.end + 1)}
        unused_run = 0
        for a in range(request.start, request.end + 1):
            unused_run = 0 if a in used else unused_run + 1
            assert unused_run <= limits.gap(request.table)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_request_count_is_minimal(
    scenario: tuple[list[TagCodec], Limits, list[tuple[ModbusTable, int, int]]],
) -> None:
    """Brute force over every way to cut the sorted tags into runs finds no fewer requests."""
    tags, limits, holes = scenario
    if not tags:
        return
    table = tags[0].table
    ordered = sorted(tags, key=lambda t: (t.address, t.end))
    size, max_gap = limits.size(table), limits.gap(table)
    hole_addresses = {a for _, first, last in holes for a in range(first, last + 1)}

    def valid(i: int, j: int) -> bool:
        run = ordered[i:j]
        start, end = run[0].address, max(t.end for t in run)
        if end - start + 1 > size:
            return False
        used = {a for t in run for a in range(t.address, t.end + 1)}
        gap = 0
        for a in range(start, end + 1):
            if a in used:
                gap = 0
                continue
            gap += 1
            if gap > max_gap or a in hole_addresses:
                return False
        return True

    @functools.cache
    def fewest(i: int) -> int:
        if i == len(ordered):
            return 0
        return min(1 + fewest(j) for j in range(i + 1, len(ordered) + 1) if valid(i, j))

    assert len(plan(tags, limits, holes)) == fewest(0)
