"""Values ⇄ 16-bit registers in any byte order, and the register map of a profile.

Pure functions, no I/O. A byte order names the bytes of the big-endian value (``A`` most
significant) in the order they travel: ``ABCD`` is big-endian, ``CDAB`` swaps the words,
``BADC`` the bytes in each word, ``DCBA`` is little-endian; 8-byte orders likewise
(``GHEFCDAB``: words reversed). Strings are ASCII, two characters per register, the first in
the high byte, padded with NUL.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

from simulators._profiles import TYPE_SIZES, Profile, TagSpec, Value

_STRUCT = {"float32": ">f", "float64": ">d"}
_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q"}
_FORMATS |= {"uint64": "Q", "float32": "f", "float64": "d"}


def _unorder(wire: bytes, order: str) -> bytes:
    out = bytearray(len(wire))
    for i, letter in enumerate(order):
        out[ord(letter) - 65] = wire[i]
    return bytes(out)


def _to_registers(wire: bytes) -> list[int]:
    return [wire[i] << 8 | wire[i + 1] for i in range(0, len(wire), 2)]


def _from_registers(registers: list[int]) -> bytes:
    return b"".join(r.to_bytes(2, "big") for r in registers)


def encode(spec: TagSpec, raw: Value) -> list[int]:
    """The registers a word tag (not a bit) occupies, for its raw value."""
    if spec.type == "string":
        data = str(raw).encode("ascii").ljust(spec.count * 2, b"\0")
        return _to_registers(data)
    return _number_encoder(spec.type, spec.order)(raw)


@lru_cache(maxsize=64)
def _number_encoder(type_: str, order: str | None) -> Callable[[Value], list[int]]:
    """Raw value → registers for one type and byte order: built once, as servers encode every
    value of every machine once a second."""
    size = TYPE_SIZES[type_]
    pack = struct.Struct(">" + _FORMATS[type_]).pack
    words = struct.Struct(f">{size // 2}H").unpack
    convert = float if type_ in ("float32", "float64") else int
    order = order or "ABCDEFGH"[:size]
    if order == "ABCDEFGH"[:size]:
        return lambda raw: list(words(pack(convert(raw))))  # type: ignore[arg-type]
    pick = itemgetter(*(ord(letter) - 65 for letter in order))
    return lambda raw: list(words(bytes(pick(pack(convert(raw))))))  # type: ignore[arg-type]


def decode(spec: TagSpec, registers: list[int]) -> Value:
    """The raw value of a word tag from the registers it occupies (for client writes)."""
    wire = _from_registers(registers)
    if spec.type == "string":
        return wire.rstrip(b"\0").decode("ascii", errors="replace")
    size = TYPE_SIZES[spec.type]
    data = _unorder(wire, spec.order or "ABCDEFGH"[:size])
    if spec.type in _STRUCT:
        return float(struct.unpack(_STRUCT[spec.type], data)[0])
    return int.from_bytes(data, "big", signed=not spec.type.startswith("u"))


@dataclass(frozen=True, slots=True, eq=False)
class Cell:
    """Registers served together: one word tag, or the bit tags that share one register."""

    start: int
    count: int
    tags: tuple[TagSpec, ...]

    @property
    def bits(self) -> bool:
        return self.tags[0].bit is not None

    @property
    def writable(self) -> bool:
        return all(t.writable for t in self.tags)

    def registers(self, raws: dict[str, Value]) -> list[int]:
        if self.bits:
            word = 0
            for tag in self.tags:
                if raws[tag.name]:
                    word |= 1 << (tag.bit or 0)
            return [word]
        return encode(self.tags[0], raws[self.tags[0].name])


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where each register and bit of a profile is, by table (``hr``, ``ir``, ``co``, ``di``)."""

    #: table → register address → the cell covering it
    words: dict[str, dict[int, Cell]]
    #: table → bit address → the bool tag there
    bits: dict[str, dict[int, TagSpec]]


@lru_cache(maxsize=64)
def register_map(profile: Profile) -> RegisterMap:
    """Index a profile's tags by address; raise ValueError if two of them overlap."""
    words: dict[str, dict[int, Cell]] = {"hr": {}, "ir": {}}
    bits: dict[str, dict[int, TagSpec]] = {"co": {}, "di": {}}
    shared: dict[tuple[str, int], list[TagSpec]] = {}
    for spec in profile.tags:
        table = spec.table
        if table in bits:
            if spec.register in bits[table]:
                raise ValueError(f"{profile.name}: {spec.name} overlaps at {spec.address}")
            bits[table][spec.register] = spec
        elif spec.bit is not None:
            shared.setdefault((table, spec.register), []).append(spec)
        else:
            _place(words[table], Cell(spec.register, spec.count, (spec,)), profile)
    for (table, register), specs in shared.items():
        if len({s.bit for s in specs}) != len(specs):
            raise ValueError(f"{profile.name}: two bits at {table}:{register} coincide")
        _place(words[table], Cell(register, 1, tuple(specs)), profile)
    return RegisterMap(words, bits)


def _place(table: dict[int, Cell], cell: Cell, profile: Profile) -> None:
    for address in range(cell.start, cell.start + cell.count):
        if address in table:
            raise ValueError(
                f"{profile.name}: {cell.tags[0].name} overlaps {table[address].tags[0].name}"
            )
        table[address] = cell


@dataclass(frozen=True, slots=True)
class Area:
    """One table of a machine at one tick: registers (or bits) from ``base`` on, ``None``
    where no tag is."""

    base: int
    values: list[int | None] | list[bool | None]

    def window(self, address: int, count: int, fill: int | None) -> list[int] | list[bool] | None:
        """``count`` values from ``address``; addresses without a tag hold ``fill``, or, when
        ``fill`` is None, make the whole read None (the device refuses it)."""
        lo = address - self.base
        if lo >= 0 and lo + count <= len(self.values):
            out = self.values[lo : lo + count]
        else:
            out = [
                self.values[i] if 0 <= i < len(self.values) else None for i in range(lo, lo + count)
            ]
        if None in out:
            if fill is None:
                return None
            out = [fill if v is None else v for v in out]
        return out  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Spans:
    """Per table: first address, number of addresses up to the last tag, what is there."""

    words: dict[str, tuple[int, int, tuple[Cell, ...]]]
    bits: dict[str, tuple[int, int, tuple[TagSpec, ...]]]


@lru_cache(maxsize=64)
def _spans(profile: Profile) -> _Spans:
    rmap = register_map(profile)
    words = {}
    for table, cells in rmap.words.items():
        base = min(cells, default=0)
        unique = tuple(dict.fromkeys(cells[a] for a in sorted(cells)))
        words[table] = (base, max(cells, default=-1) - base + 1, unique)
    bits = {}
    for table, specs in rmap.bits.items():
        base = min(specs, default=0)
        bits[table] = (
            base,
            max(specs, default=-1) - base + 1,
            tuple(specs[a] for a in sorted(specs)),
        )
    return _Spans(words, bits)


def image(profile: Profile, raws: dict[str, Value]) -> dict[str, Area]:
    """Every table of a machine whose tags hold ``raws``: what a read at that tick returns.

    Servers build it once per tick and answer every read of the tick from it, instead of
    computing the values of each request again.
    """
    spans = _spans(profile)
    out: dict[str, Area] = {}
    for table, (base, size, cells) in spans.words.items():
        words: list[int | None] = [None] * size
        for cell in cells:
            words[cell.start - base : cell.start - base + cell.count] = cell.registers(raws)
        out[table] = Area(base, words)
    for table, (base, size, specs) in spans.bits.items():
        bits: list[bool | None] = [None] * size
        for spec in specs:
            bits[spec.register - base] = bool(raws[spec.name])
        out[table] = Area(base, bits)
    return out
