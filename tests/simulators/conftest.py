"""Helpers for the simulator tests: an independent register decoder and a frozen clock.

The decoder leans on pymodbus's client-side conversion (word order) plus a byte swap, not on
the simulators' own codec, so a mistake in the codec cannot cancel itself out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
from pymodbus.client.mixin import ModbusClientMixin

import simulators

#: byte order → (bytes swapped in each register, word order)
ORDERS = {
    "AB": (False, "big"),
    "BA": (True, "big"),
    "ABCD": (False, "big"),
    "CDAB": (False, "little"),
    "BADC": (True, "big"),
    "DCBA": (True, "little"),
    "ABCDEFGH": (False, "big"),
    "GHEFCDAB": (False, "little"),
    "BADCFEHG": (True, "big"),
    "HGFEDCBA": (True, "little"),
}
_TYPES = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "int64": ModbusClientMixin.DATATYPE.INT64,
    "uint64": ModbusClientMixin.DATATYPE.UINT64,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
    "float64": ModbusClientMixin.DATATYPE.FLOAT64,
}


def _decode_registers(spec: simulators.TagSpec, registers: list[int]) -> simulators.Value:
    """What a client makes of the registers of a word tag (not a bit)."""
    if spec.type == "string":
        data = b"".join(r.to_bytes(2, "big") for r in registers)
        return data.rstrip(b"\0").decode("ascii")
    swap, word_order = ORDERS[spec.order or "ABCDEFGH"[: len(registers) * 2]]
    if swap:
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    value = ModbusClientMixin.convert_from_registers(
        registers, _TYPES[spec.type], word_order=word_order
    )
    assert isinstance(value, int | float)
    return value


Decoder = Callable[[simulators.TagSpec, list[int]], simulators.Value]


@pytest.fixture(scope="session")
def decode_registers() -> Decoder:
    """What a plain client makes of the registers of a word tag."""
    return _decode_registers


@pytest.fixture
def frozen() -> Callable[[], float]:
    """A clock stopped in the middle of a second, so every read sees one tick."""
    t = math.floor(time.time()) + 0.5
    return lambda: t
