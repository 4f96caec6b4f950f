"""Register and bit decoding: pure functions on bytes, no I/O.

pymodbus's ``convert_from_registers`` knows only the word order; devices in the field also swap
bytes inside words, and 64-bit values come in eight orders. So the codec is ours: an order
string names, for each byte on the wire, which byte of the value it is (``A`` the most
significant), and decoding permutes the wire bytes into big-endian before ``struct`` reads
them. The permutation is computed once per layout (type and order) and shared by every tag with that
layout; decoding a tag is a slice, an optional permutation and one ``unpack_from``.

Registers arrive as 16-bit words. :meth:`TagCodec.decode` decodes one tag from its offset in
a block of bytes: the reference. The driver runs :class:`BlockDecoder`, every tag of a request
compiled into one program (one pack, one permutation, one ``struct`` unpack), held by the tests
to decode exactly as the reference does.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from edge._model import DataType, ModbusTable, Tag, parse_modbus_address
from edge._samples import Quality, Value

_FORMATS = {
    DataType.INT8: "b",
    DataType.UINT8: "B",
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_NATURAL = "ABCDEFGH"


def words_to_bytes(words: Sequence[int]) -> bytes:
    """Registers as they came off the wire: each word big-endian, as Modbus sends it."""
    return struct.pack(f">{len(words)}H", *words)


def bytes_to_words(data: bytes) -> list[int]:
    if len(data) % 2:
        data += b"\0"
    return list(struct.unpack(f">{len(data) // 2}H", data))


def to_big_endian(order: str) -> tuple[int, ...]:
    """Positions on the wire of the value's bytes, most significant first.

    ``order[i]`` is the value byte at wire position ``i``; the result ``p`` satisfies
    ``big_endian[k] == wire[p[k]]``.
    """
    return tuple(order.index(letter) for letter in _NATURAL[: len(order)])


#: a decoder: (bytes of the response, byte offset of the tag) → raw value
Decoder = Callable[[bytes, int], Value]


@functools.cache
def _numeric(kind: DataType, order: str) -> Decoder:
    fmt = _FORMATS[kind]
    size = struct.calcsize(fmt)
    natural = _NATURAL[:size]
    if order == natural:
        unpack = struct.Struct(">" + fmt).unpack_from
        return lambda raw, off: unpack(raw, off)[0]
    if order == natural[::-1]:
        unpack = struct.Struct("<" + fmt).unpack_from
        return lambda raw, off: unpack(raw, off)[0]
    big = struct.Struct(">" + fmt).unpack
    permute = itemgetter(*to_big_endian(order))
    return lambda raw, off: big(bytes(permute(raw[off : off + size])))[0]


@functools.cache
def _byte(kind: DataType, high: bool) -> Decoder:
    unpack = struct.Struct(_FORMATS[kind]).unpack_from
    shift = 0 if high else 1  # the high byte of a big-endian word comes first
    return lambda raw, off: unpack(raw, off + shift)[0]


@functools.cache
def _register_bit(bit: int) -> Decoder:
    index, mask = (1, 1 << bit) if bit < 8 else (0, 1 << (bit - 8))
    return lambda raw, off: bool(raw[off + index] & mask)


@functools.cache
def _octets(length: int, order: str, per_register: int) -> Callable[[bytes, int], bytes]:
    if per_register == 1:
        return lambda raw, off: raw[off + 1 : off + 2 * length : 2]
    if order == "BA":
        even = length + length % 2
        return lambda raw, off: bytes(
            b for i in range(off, off + even, 2) for b in (raw[i + 1], raw[i])
        )[:length]
    return lambda raw, off: raw[off : off + length]


@functools.cache
def _string(octets: Callable[[bytes, int], bytes]) -> Decoder:
    def decode(raw: bytes, off: int) -> Value:
        return octets(raw, off).split(b"\0", 1)[0].decode("utf-8", "replace")

    return decode


@dataclass(frozen=True, slots=True)
class TagCodec:
    """How one tag sits in its table, and how to turn its bytes (or bit) into a value."""

    name: str
    table: ModbusTable
    address: int
    #: registers (or bits, for coils and discrete inputs) the tag occupies
    count: int
    decode_raw: Decoder
    scale: float = 1.0
    offset: float = 0.0
    #: for numbers: (struct format letter, byte offset in the first register, wire positions
    #: of the value's bytes most significant first, or None when already big-endian); None
    #: for bits, strings and bytes. What :class:`BlockDecoder` compiles.
    layout: tuple[str, int, tuple[int, ...] | None] | None = None

    @property
    def end(self) -> int:
        """The last address the tag occupies."""
        return self.address + self.count - 1

    def decode(self, raw: bytes, byte_offset: int) -> tuple[Value, Quality]:
        """The tag's value in a block of register bytes, scaled, with its quality."""
        value = self.decode_raw(raw, byte_offset)
        if isinstance(value, float):
            if self.scale != 1.0 or self.offset != 0.0:
                value = value * self.scale + self.offset
            return value, Quality.GOOD if math.isfinite(value) else Quality.UNCERTAIN
        if isinstance(value, int) and not isinstance(value, bool):
            if self.scale != 1.0 or self.offset != 0.0:
                return value * self.scale + self.offset, Quality.GOOD
            return value, Quality.GOOD
        if isinstance(value, str) and "\ufffd" in value:
            return value, Quality.UNCERTAIN  # bytes that are not UTF-8 text
        return value, Quality.GOOD


class BlockDecoder:
    """The tags of one register request compiled into one decoding program.

    Decoding tag by tag costs a slice, a call and a few type checks per tag; at 100,000 tags a
    second that is most of the driver's time. Compiled once per request, a poll instead packs
    the registers into bytes, moves the bytes of values that are not big-endian into place with
    one permutation of the whole block, unpacks every number with one precompiled
    ``struct.Struct`` (pad bytes for the gaps), and then touches only the tags that need more:
    scale and offset, a finiteness check for floats, and the tags that are not plain numbers
    (bits of a register, strings, bytes, numbers overlapping another tag), which keep their own
    decoder. It decodes exactly as :meth:`TagCodec.decode` does, tag by tag; the tests hold it
    to that for every type and byte order.
    """

    __slots__ = (
        "_count",
        "_good",
        "_numbers",
        "_others",
        "_permute",
        "_reorder",
        "_scaled",
        "_suspect",
        "_words",
        "names",
    )

    def __init__(self, tags: Sequence[TagCodec], start: int, count: int) -> None:
        self.names = tuple(tag.name for tag in tags)
        self._count = count
        # structs, not their bound methods: those would be two more objects per request
        self._words = _struct(f">{count}H")
        permutation = list(range(2 * count))
        plain: list[tuple[int, int, str]] = []  # (byte offset, tag index, format)
        taken = bytearray(2 * count)  # bytes already given to a plain number
        others = []
        for i, tag in enumerate(tags):
            layout = tag.layout
            offset = 2 * (tag.address - start)
            if layout is not None:
                letter, shift, order = layout
                first = offset + shift
                size = struct.calcsize(letter)
                if not any(taken[first : first + size]):
                    taken[first : first + size] = b"\1" * size
                    if order is not None:
                        permutation[first : first + size] = [first + p for p in order]
                    plain.append((first, i, letter))
                    continue
            others.append((i, tag.decode_raw, offset))
        plain.sort()
        fmt, position = ">", 0
        for first, _, letter in plain:
            fmt += f"{first - position}x{letter}" if first > position else letter
            position = first + struct.calcsize(letter)
        self._numbers = _struct(fmt) if plain else None
        moved = permutation != list(range(2 * count))
        self._permute = _permuter(tuple(permutation)) if moved else None
        # the plain numbers come out in address order, then the others: back to tag order
        slots = [i for _, i, _ in plain] + [i for i, _, _ in others]
        where = {tag_index: position for position, tag_index in enumerate(slots)}
        inverse = [where[i] for i in range(len(tags))]
        self._reorder = None if slots == list(range(len(tags))) else itemgetter(*inverse)
        self._others = tuple(others)
        self._scaled = tuple(
            (i, tag.scale, tag.offset)
            for i, tag in enumerate(tags)
            if tag.layout is not None and (tag.scale != 1.0 or tag.offset != 0.0)
        )
        # floats may be NaN or infinite, text may not be UTF-8: both make a sample Uncertain
        self._suspect = tuple(
            i for i, tag in enumerate(tags) if tag.layout is None or tag.layout[0] in "fd"
        )
        self._good = _all_good(len(tags))

    def decode(self, words: Sequence[int]) -> tuple[list[Value], list[Quality]]:
        """The values of the tags, in the order they were given, and their qualities.

        ``words`` holds at least the request's registers. The quality list may be shared
        between calls: do not change it.
        """
        raw = self._words.pack(*words[: self._count])
        values: list[Value] = []
        if self._numbers is not None:
            block = raw if self._permute is None else bytes(self._permute(raw))
            values += self._numbers.unpack_from(block)
        for _, decode_raw, offset in self._others:
            values.append(decode_raw(raw, offset))
        if self._reorder is not None:
            values = list(self._reorder(values))
        for i, scale, offset in self._scaled:
            values[i] = values[i] * scale + offset  # type: ignore[operator]
        qualities = self._good
        for i in self._suspect:
            value = values[i]
            if (
                not _isfinite(value)
                if isinstance(value, float)
                else isinstance(value, str) and "\ufffd" in value
            ):
                if qualities is self._good:
                    qualities = list(qualities)
                qualities[i] = Quality.UNCERTAIN
        return values, qualities


class BitDecoder:
    """The tags of one coil or discrete-input request: the bits at their indices."""

    __slots__ = ("_good", "_pick", "names")

    def __init__(self, tags: Sequence[TagCodec], start: int) -> None:
        self.names = tuple(tag.name for tag in tags)
        indices = [tag.address - start for tag in tags]
        pick = itemgetter(*indices)
        self._pick = pick if len(indices) > 1 else lambda bits: (pick(bits),)
        self._good = _all_good(len(tags))

    def decode(self, bits: Sequence[bool]) -> tuple[list[Value], list[Quality]]:
        """As :meth:`BlockDecoder.decode`, for bits."""
        return list(map(bool, self._pick(bits))), self._good


_isfinite = math.isfinite
#: shared between decoders: a driver that learnt to read around refused holes has tens of
#: thousands of small requests, most of them with the same formats
_struct = functools.lru_cache(maxsize=4096)(struct.Struct)


@functools.lru_cache(maxsize=4096)
def _permuter(permutation: tuple[int, ...]) -> Callable[[bytes], tuple[int, ...]]:
    return itemgetter(*permutation)


@functools.lru_cache(maxsize=256)
def _all_good(n: int) -> list[Quality]:
    return [Quality.GOOD] * n


def decode_bits(bits: Sequence[bool], index: int) -> tuple[Value, Quality]:
    """A coil or discrete input: pymodbus hands bits over already unpacked."""
    return bool(bits[index]), Quality.GOOD


def compile_tag(tag: Tag) -> TagCodec:
    """The codec of a validated tag (the model has already rejected impossible combinations)."""
    addr, count = tag.modbus_span()
    kind = tag.type
    decoder: Decoder
    layout = None
    if addr.table.is_bits:
        decoder = _coil
    elif addr.bit is not None:
        decoder = _register_bit(addr.bit)
    elif kind.size == 1:
        decoder = _byte(kind, high=tag.byte == "high")
        layout = _layout(kind, "", tag.byte == "high")
    elif kind.size is not None:
        order = tag.order or _NATURAL[: kind.size]
        decoder = _numeric(kind, order)
        layout = _layout(kind, order, high=False)
    else:
        octets = _octets(tag.length or 0, tag.order or "AB", tag.bytes_per_register)
        decoder = _string(octets) if kind is DataType.STRING else octets
    return TagCodec(
        tag.name, addr.table, addr.address, count, decoder, tag.scale, tag.offset, layout
    )


@functools.cache
def _layout(kind: DataType, order: str, high: bool) -> tuple[str, int, tuple[int, ...] | None]:
    """A number's layout for :class:`BlockDecoder`, one shared object per type and order."""
    if kind.size == 1:
        return _FORMATS[kind], 0 if high else 1, None
    return _FORMATS[kind], 0, None if order == _NATURAL[: len(order)] else to_big_endian(order)


def _coil(raw: bytes, off: int) -> Value:
    raise TypeError("coils and discrete inputs are decoded with decode_bits")


# --- encoding: the inverse, for register images in tests, simulators and writes --------------


def encode(tag: Tag, value: Value) -> list[int]:
    """The register words (or, for coils and discrete inputs, the one bit) of a raw value.

    For an 8-bit value or a register bit the other bits of the word are zero; callers that
    share a register between tags OR the words together.
    """
    addr, count = tag.modbus_span()
    kind = tag.type
    if addr.table.is_bits:
        return [int(bool(value))]
    if addr.bit is not None:
        return [int(bool(value)) << addr.bit]
    if kind.size == 1:
        if not isinstance(value, int):
            raise TypeError(f"tag {tag.name!r}: {kind} needs an int, not {value!r}")
        byte = struct.pack(_FORMATS[kind], value)[0]
        return [byte << 8 if tag.byte == "high" else byte]
    if kind.size is not None:
        if not isinstance(value, int | float):
            raise TypeError(f"tag {tag.name!r}: {kind} needs a number, not {value!r}")
        big = struct.pack(">" + _FORMATS[kind], value)
        order = tag.order or _NATURAL[: kind.size]
        wire = bytes(big[ord(letter) - 65] for letter in order)
        return bytes_to_words(wire)
    length = tag.length or 0
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value or b"")
    if len(data) > length:
        raise ValueError(f"tag {tag.name!r}: {len(data)} bytes do not fit in {length}")
    data = data.ljust(length, b"\0")
    if tag.bytes_per_register == 1:
        return list(data)
    words = bytes_to_words(data)
    if tag.order == "BA":
        words = [(w >> 8) | ((w & 0xFF) << 8) for w in words]
    return words[:count]


def address_of(tag: Tag) -> tuple[ModbusTable, int]:
    addr = parse_modbus_address(tag.address)
    return addr.table, addr.address
