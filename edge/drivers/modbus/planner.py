"""Request planning: the fewest reads that cover a group's tags.

Per table (function code), tags sorted by address are cut greedily into runs: a run grows while
it stays within the request limit (125 registers, 2000 bits), the hole before the next tag is at
most ``max_gap`` registers (bits are counted in 16s, a register's worth), and the hole holds no
address known to be unreadable. Any part of a valid run is valid too, so greedy cutting of the
sorted sequence gives the minimum number of requests (the classic proof for segmenting a
sequence under a hereditary constraint); the tests check it against brute force.

Holes inside a request are read and discarded: one round trip costs far more than a few extra
registers on the wire, but a device that refuses an address (exception 2) would fail the whole
request, so holes never span addresses configured as unreadable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edge._model import ModbusTable
from edge._samples import Quality, Sample, Value, make_samples
from edge.drivers.modbus.codec import BitDecoder, BlockDecoder, TagCodec

#: function code of each table
FUNCTION_CODES = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE_INPUT: 2,
    ModbusTable.HOLDING_REGISTER: 3,
    ModbusTable.INPUT_REGISTER: 4,
}


class PlanError(ValueError):
    """A tag that no request can read within the limits."""


@dataclass(frozen=True, slots=True)
class Request:
    """One read: ``count`` registers or bits of ``table`` from ``start``, and the tags in it."""

    table: ModbusTable
    start: int
    count: int
    tags: tuple[TagCodec, ...]
    _decoder: BlockDecoder | BitDecoder | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def decoder(self) -> BlockDecoder | BitDecoder:
        """The tags compiled into one decoding program, on first use: a request that the
        driver replaced by smaller ones (refused holes) never needs one."""
        decoder = self._decoder
        if decoder is None:
            decoder = (
                BitDecoder(self.tags, self.start)
                if self.table.is_bits
                else BlockDecoder(self.tags, self.start, self.count)
            )
            object.__setattr__(self, "_decoder", decoder)
        return decoder

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.table]

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    def decode(self, payload: Sequence[int] | Sequence[bool]) -> list[tuple[str, Value, Quality]]:
        """(tag, value, quality) for each tag, from the response's registers or bits."""
        values, qualities = self.decoder.decode(payload)  # type: ignore[arg-type]
        return list(zip(self.decoder.names, values, qualities, strict=True))

    def samples(self, payload: Sequence[int] | Sequence[bool], edge_ts: int) -> list[Sample]:
        values, qualities = self.decoder.decode(payload)  # type: ignore[arg-type]
        return make_samples(self.decoder.names, values, qualities, edge_ts)


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 10

    def size(self, table: ModbusTable) -> int:
        return self.max_bits if table.is_bits else self.max_registers

    def gap(self, table: ModbusTable) -> int:
        return self.max_gap * 16 if table.is_bits else self.max_gap


def plan(
    tags: Iterable[TagCodec],
    limits: Limits = Limits(),
    unreadable: Sequence[tuple[ModbusTable, int, int]] = (),
) -> list[Request]:
    """Requests covering every tag exactly once, ordered by function code and address."""
    by_table: dict[ModbusTable, list[TagCodec]] = {}
    for tag in tags:
        by_table.setdefault(tag.table, []).append(tag)
    requests: list[Request] = []
    for table in sorted(by_table, key=FUNCTION_CODES.__getitem__):
        holes = sorted((first, last) for t, first, last in unreadable if t is table)
        requests += _plan_table(table, by_table[table], limits, holes)
    return requests


def _plan_table(
    table: ModbusTable,
    tags: list[TagCodec],
    limits: Limits,
    holes: list[tuple[int, int]],
) -> list[Request]:
    size, max_gap = limits.size(table), limits.gap(table)
    tags = sorted(tags, key=lambda t: (t.address, t.end))
    requests: list[Request] = []
    run: list[TagCodec] = []
    start = end = 0
    for tag in tags:
        if tag.count > size:
            raise PlanError(
                f"tag {tag.name!r} spans {tag.count} {'bits' if table.is_bits else 'registers'}"
                f", more than the {size} one request may read"
            )
        if run and (
            max(end, tag.end) - start + 1 > size
            or tag.address - end - 1 > max_gap
            or _blocked(holes, end + 1, tag.address - 1)
        ):
            requests.append(Request(table, start, end - start + 1, tuple(run)))
            run = []
        if not run:
            start, end = tag.address, tag.end
        end = max(end, tag.end)
        run.append(tag)
    if run:
        requests.append(Request(table, start, end - start + 1, tuple(run)))
    return requests


def _blocked(holes: list[tuple[int, int]], first: int, last: int) -> bool:
    """Whether any unreadable address lies in ``first..last`` (empty when last < first)."""
    return first <= last and any(h_first <= last and first <= h_last for h_first, h_last in holes)
