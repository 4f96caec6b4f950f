"""Values ⇄ 16-bit registers in any byte order, and the register map of a profile.

Pure functions, no I/O. A byte order names the bytes of the big-endian value (``A`` most
significant) in the order they travel: ``ABCD`` is big-endian, ``CDAB`` swaps the words,
``BADC`` the bytes in each word, ``DCBA`` is little-endian; 8-byte orders likewise
(``GHEFCDAB``: words reversed). Strings are ASCII, two characters per register, the first in
the high byte, padded with NUL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from simulators._profiles import TYPE_SIZES, Profile, TagSpec, Value

_STRUCT = {"float32": ">f", "float64": ">d"}


def _reorder(data: bytes, order: str) -> bytes:
    return bytes(data[ord(letter) - 65] for letter in order)


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
    size = TYPE_SIZES[spec.type]
    if spec.type in _STRUCT:
        data = struct.pack(_STRUCT[spec.type], raw)
    else:
        data = int(raw).to_bytes(size, "big", signed=not spec.type.startswith("u"))
    order = spec.order or "ABCDEFGH"[:size]
    return _to_registers(_reorder(data, order))


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
