"""The collection model: device → group (name, interval) → tag.

The poll interval belongs to the group, not to each tag (as in Neuron), so a driver can plan
one set of requests per group. Everything is validated when the config is loaded: an impossible
data type, an address that does not fit the device's protocol, overlapping registers or a
duplicate name is an error naming the device and tag, never repaired.

Modbus address syntax: ``<table>:<address>[.<bit>]`` with table ``hr`` (holding registers,
function 3), ``ir`` (input registers, 4), ``co`` (coils, 1), ``di`` (discrete inputs, 2), and
the 0-based protocol address (what goes on the wire, not the 4xxxx "register number"). ``.bit``
selects one bit of a register, 0 being the least significant.

Byte orders name the bytes of the value, most significant first as ``A``, in the order they
appear on the wire: 32-bit ``ABCD`` is big-endian (the Modbus norm), ``CDAB`` swaps the words,
``BADC`` swaps the bytes in each word, ``DCBA`` is little-endian; 64-bit values have the eight
orders made of those swaps and a swap of the 32-bit halves. Common aliases (``big``,
``little``, ``MSW-BE``…) are accepted and normalised once, here.

Two 8-bit values (``byte: low|high``) or several register bits may share a register; any other
overlap is an error. A tag inside a range the device is declared unable to read
(``unreadable``), or longer than one request may carry (``max_registers``), is refused at load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

import identifiers
from common import Duration, StrictModel

# --- small value types -----------------------------------------------------------------------


def _identifier(value: str) -> str:
    return str(identifiers.parse(value))


IdentifierStr = Annotated[str, AfterValidator(_identifier)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


def non_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """Checked after the items (not with ``min_length``), so a list whose items all failed is
    reported once, by its items, not again as empty."""
    if not items:
        raise ValueError("must not be empty")
    return items


class DataType(StrEnum):
    BOOL = "bool"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"

    @property
    def size(self) -> int | None:
        """Bytes the value occupies; None for bool, string and bytes."""
        return _SIZES.get(self)

    @property
    def numeric(self) -> bool:
        return self.size is not None


_SIZES = {
    DataType.INT8: 1,
    DataType.UINT8: 1,
    DataType.INT16: 2,
    DataType.UINT16: 2,
    DataType.INT32: 4,
    DataType.UINT32: 4,
    DataType.INT64: 8,
    DataType.UINT64: 8,
    DataType.FLOAT32: 4,
    DataType.FLOAT64: 8,
}


class Stage(StrEnum):
    """Business stages of the indicator item 数据采集 that machine data can serve."""

    EQUIPMENT = "equipment"  # 设备管理
    ENERGY = "energy"  # 能耗管理
    QUALITY = "quality"  # 质量管理
    PRODUCTION = "production"  # 生产管控
    SAFETY = "safety"  # 安全生产
    PLANNING = "planning"  # 计划排程
    LOGISTICS = "logistics"  # 仓储物流

    @property
    def label(self) -> str:
        return _STAGE_LABELS[self]


_STAGE_LABELS = {
    Stage.EQUIPMENT: "设备管理",
    Stage.ENERGY: "能耗管理",
    Stage.QUALITY: "质量管理",
    Stage.PRODUCTION: "生产管控",
    Stage.SAFETY: "安全生产",
    Stage.PLANNING: "计划排程",
    Stage.LOGISTICS: "仓储物流",
}
_STAGE_BY_LABEL = {label: stage for stage, label in _STAGE_LABELS.items()}


def _stage(value: object) -> object:
    return _STAGE_BY_LABEL.get(value, value) if isinstance(value, str) else value


StageField = Annotated[Stage, BeforeValidator(_stage)]


# --- byte orders -----------------------------------------------------------------------------


def _orders(size: int) -> tuple[str, ...]:
    """All orders made of swapping bytes in words, words in dwords and dwords in qwords."""
    natural = "ABCDEFGH"[:size]
    found: list[str] = []
    for swaps in range(1 << max(size.bit_length() - 1, 0)):
        letters = list(natural)
        width = 1
        for level in range(size.bit_length() - 1):
            if swaps >> level & 1:
                chunks = [letters[i : i + width] for i in range(0, size, width)]
                for i in range(0, len(chunks), 2):
                    chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
                letters = [c for chunk in chunks for c in chunk]
            width *= 2
        found.append("".join(letters))
    return tuple(found)


BYTE_ORDERS: dict[int, tuple[str, ...]] = {size: _orders(size) for size in (2, 4, 8)}

_ORDER_ALIASES = {  # alias → order for 4 bytes; other sizes derived below
    "BIG": "ABCD",
    "BE": "ABCD",
    "MSW-BE": "ABCD",
    "LITTLE": "DCBA",
    "LE": "DCBA",
    "LSW-LE": "DCBA",
    "MSW-LE": "BADC",
    "LSW-BE": "CDAB",
}


def normalise_order(order: str, size: int) -> str:
    """Return the canonical letter form of ``order`` for a value of ``size`` bytes."""
    alias = _ORDER_ALIASES.get(order.upper())
    if alias is not None:
        order = _swapped(size, byte_swap=alias in ("BADC", "DCBA"), word_swap=alias[0] in "CD")
    order = order.upper()
    if order not in BYTE_ORDERS[size]:
        raise ValueError(
            f"byte order {order!r} does not fit a {size}-byte value; "
            f"use one of {', '.join(BYTE_ORDERS[size])}"
        )
    return order


def _swapped(size: int, *, byte_swap: bool, word_swap: bool) -> str:
    """Big-endian with bytes swapped in each word and/or the words reversed."""
    letters = "ABCDEFGH"[:size]
    if word_swap and byte_swap:
        return letters[::-1]
    if byte_swap:
        return "".join(letters[i + 1] + letters[i] for i in range(0, size, 2))
    if word_swap:
        words = [letters[i : i + 2] for i in range(0, size, 2)]
        return "".join(reversed(words))
    return letters


# --- addresses -------------------------------------------------------------------------------


class ModbusTable(StrEnum):
    COIL = "co"
    DISCRETE_INPUT = "di"
    HOLDING_REGISTER = "hr"
    INPUT_REGISTER = "ir"

    @property
    def is_bits(self) -> bool:
        # identity, not ``in``: StrEnum equality goes through str.__eq__, twice per request
        return self is ModbusTable.COIL or self is ModbusTable.DISCRETE_INPUT


_MODBUS_ADDRESS = re.compile(r"(?P<table>co|di|hr|ir):(?P<address>\d{1,5})(?:\.(?P<bit>\d{1,2}))?")
_OPCUA_NODEID = re.compile(r"(?:ns=\d+;)?(?:i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=[A-Za-z0-9+/=]+)")


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    table: ModbusTable
    address: int
    bit: int | None = None

    def __str__(self) -> str:
        bit = "" if self.bit is None else f".{self.bit}"
        return f"{self.table.value}:{self.address}{bit}"


def parse_modbus_address(text: str) -> ModbusAddress:
    m = _MODBUS_ADDRESS.fullmatch(text)
    if not m:
        raise ValueError(
            f"{text!r} is not a Modbus address: use hr:N, ir:N, co:N, di:N or hr:N.BIT"
        )
    table = ModbusTable(m["table"])
    address = int(m["address"])
    if address > 0xFFFF:
        raise ValueError(f"{text!r}: address {address} is above 65535")
    bit = None if m["bit"] is None else int(m["bit"])
    if bit is not None:
        if table.is_bits:
            raise ValueError(f"{text!r}: coils and discrete inputs have no bits to select")
        if bit > 15:
            raise ValueError(f"{text!r}: a register has bits 0 to 15")
    return ModbusAddress(table, address, bit)


# --- tags, groups, devices -------------------------------------------------------------------


class Tag(StrictModel):
    """One data point of a device.

    ``byte`` picks the half of the register an 8-bit value sits in. Strings and bytes pack two
    bytes per register (``order`` ``AB``, high byte first, or ``BA``) or one, in the low byte
    (``bytes_per_register: 1``). ``deadband`` (absolute), ``deadband_percent`` (of the last
    value sent) and ``max_silence`` make the tag report by exception.
    """

    name: Name
    address: str = Field(min_length=1, max_length=512)
    type: DataType
    order: str | None = None
    byte: Literal["low", "high"] | None = None
    length: int | None = Field(default=None, ge=1, le=246)
    bytes_per_register: Literal[1, 2] = 2
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, max_length=32)
    stages: tuple[StageField, ...] = ()
    description: str | None = Field(default=None, max_length=256)
    deadband: float | None = Field(default=None, ge=0)
    deadband_percent: float | None = Field(default=None, ge=0, le=100)
    max_silence: Duration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Tag:
        size = self.type.size
        text = self.type in (DataType.STRING, DataType.BYTES)
        if text:
            if self.length is None:
                raise ValueError(f"type {self.type} needs 'length' (bytes)")
        elif self.length is not None:
            raise ValueError(f"'length' applies to string and bytes, not {self.type}")
        if self.bytes_per_register != 2 and not text:
            raise ValueError(f"'bytes_per_register' applies to string and bytes, not {self.type}")
        if self.order is not None:
            if text and self.bytes_per_register == 2:
                size = 2
            if size is None or size < 2:
                raise ValueError(f"'order' does not apply to type {self.type}")
            object.__setattr__(self, "order", normalise_order(self.order, size))
        if self.byte is not None and size != 1:
            raise ValueError(f"'byte' applies to int8 and uint8, not {self.type}")
        if not self.type.numeric and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"'scale' and 'offset' apply to numbers, not {self.type}")
        if self.scale == 0:
            raise ValueError("'scale' of 0 would erase every value")
        if not self.type.numeric and (
            self.deadband is not None or self.deadband_percent is not None
        ):
            raise ValueError(f"a deadband applies to numbers, not {self.type}")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError("a stage is listed twice")
        return self

    def modbus_span(self) -> tuple[ModbusAddress, int]:
        """Parsed address and the number of registers (or bits) the tag occupies."""
        addr = parse_modbus_address(self.address)
        if addr.table.is_bits or addr.bit is not None:
            return addr, 1
        if self.length is not None:  # string and bytes
            return addr, (self.length + self.bytes_per_register - 1) // self.bytes_per_register
        size = self.type.size or 2
        return addr, max(size // 2, 1)

    def register_mask(self) -> int:
        """The bits of each of its registers the tag uses: all 16 except for bits and bytes."""
        addr = parse_modbus_address(self.address)
        if addr.bit is not None:
            return 1 << addr.bit
        if self.type.size == 1:
            return 0xFF00 if self.byte == "high" else 0x00FF
        return 0xFFFF


class Group(StrictModel):
    """Tags polled together at one interval."""

    name: Name
    interval: Duration
    tags: Annotated[tuple[Tag, ...], AfterValidator(non_empty)]

    @field_validator("interval")
    @classmethod
    def _sane_interval(cls, value: float) -> float:
        if not 0.01 <= value <= 86400:
            raise ValueError("interval must be between 10ms and 24h")
        return value


class ModbusOptions(StrictModel):
    """How a Modbus device is read; the defaults suit most PLCs on a local network."""

    timeout: Duration = Field(default=1.0, description="per request")
    retries: int = Field(default=1, ge=0, le=10, description="after a timeout, per request")
    busy_retries: int = Field(
        default=3, ge=0, le=20, description="after exception 6, 'server device busy'"
    )
    busy_delay: Duration = 0.1
    max_gap: int = Field(
        default=10,
        ge=0,
        le=124,
        description="registers (or 16 bits each) read and discarded to merge two requests",
    )
    max_registers: int = Field(default=125, ge=1, le=125, description="per request")
    max_bits: int = Field(default=2000, ge=1, le=2000, description="per request")
    unreadable: tuple[str, ...] = Field(
        default=(),
        description="addresses or ranges such as 'hr:100-119' that the device refuses: "
        "requests never span them",
    )
    backoff_max: Duration = Field(default=30.0, description="longest wait between reconnects")

    @field_validator("unreadable")
    @classmethod
    def _ranges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            parse_modbus_range(text)
        return value

    def unreadable_ranges(self) -> list[tuple[ModbusTable, int, int]]:
        return [parse_modbus_range(text) for text in self.unreadable]


def parse_modbus_range(text: str) -> tuple[ModbusTable, int, int]:
    """``hr:100-119`` or ``hr:100`` → (table, first, last)."""
    table, _, span = text.partition(":")
    first, _, last = span.partition("-")
    try:
        start = parse_modbus_address(f"{table}:{first}")
        end = parse_modbus_address(f"{table}:{last or first}")
    except ValueError:
        raise ValueError(f"{text!r} is not an address range such as 'hr:100-119'") from None
    if start.bit is not None or end.bit is not None or end.address < start.address:
        raise ValueError(f"{text!r} is not an address range such as 'hr:100-119'")
    return start.table, start.address, end.address


class ModbusTcp(ModbusOptions):
    """Modbus TCP, or RTU frames over TCP (``framer: rtu``) as serial-to-Ethernet converters
    speak. ``backup_host`` is tried when the main host does not answer."""

    protocol: Literal["modbus-tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    framer: Literal["socket", "rtu"] = "socket"
    backup_host: str | None = Field(default=None, min_length=1)
    backup_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _backup(self) -> ModbusTcp:
        if self.backup_port is not None and self.backup_host is None:
            raise ValueError("backup_port needs backup_host")
        return self


class ModbusRtu(ModbusOptions):
    protocol: Literal["modbus-rtu"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    unit_id: int = Field(default=1, ge=1, le=247)
    frame_gap: Duration | None = Field(
        default=None,
        description="quiet time between a response and the next request, for slow slaves "
        "on RS-485 (the 3.5-character gap of the standard is kept by the framer anyway)",
    )


def _relative_to_config(value: str | None, info: ValidationInfo) -> str | None:
    """A path in the config file, relative to the file's folder (``base_dir`` in the
    validation context, as the config loader passes it)."""
    base = (info.context or {}).get("base_dir")
    if value is None or base is None or Path(value).is_absolute():
        return value
    return str(Path(base) / value)


ConfigPath = Annotated[str, Field(min_length=1), AfterValidator(_relative_to_config)]


class OpcUa(StrictModel):
    """An OPC UA server. ``mode`` ``poll`` reads each group at its interval with Read requests;
    ``subscribe`` makes each group one or more subscriptions publishing at the group's interval.
    Paths are relative to the config file; without ``certificate`` a secure connection makes a
    self-signed client certificate on first use, next to the config."""

    protocol: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://[^\s/]+(:\d+)?(/\S*)?$")
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password_file: ConfigPath | None = None
    certificate: ConfigPath | None = Field(default=None, description="client certificate (DER)")
    private_key: ConfigPath | None = Field(default=None, description="its private key (PEM)")
    mode: Literal["poll", "subscribe"] = "poll"
    timeout: Duration = Field(default=5.0, description="per request")
    watchdog: Duration = Field(
        default=5.0, description="how often an idle session is probed (asyncua's 1 s misfires)"
    )
    max_nodes_per_read: int = Field(
        default=1000, ge=1, le=100_000, description="cap; the server's MaxNodesPerRead also holds"
    )
    items_per_subscription: int = Field(default=1000, ge=1, le=100_000)
    sampling_interval: Duration | None = Field(
        default=None, description="subscribe mode; default: the group's interval"
    )
    queue_size: int = Field(default=1, ge=1, le=10_000, description="subscribe mode, per item")
    backoff_max: Duration = Field(default=30.0, description="longest wait between reconnects")

    @model_validator(mode="after")
    def _security(self, info: ValidationInfo) -> OpcUa:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError("security_policy and security_mode must both be None or both set")
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if self.certificate is None and self.security_mode != "None":
            for name, default in (
                ("certificate", "opcua-client.der"),
                ("private_key", "opcua-client.pem"),
            ):
                object.__setattr__(self, name, _relative_to_config(default, info))
        return self


Connection = Annotated[ModbusTcp | ModbusRtu | OpcUa, Field(discriminator="protocol")]


class OeeConfig(StrictModel):
    """The tags of a device that OEE (availability × performance × quality) is computed from.

    ``state``: a tag whose values in ``running`` count as running and in ``planned`` as
    planned production time (e.g. 0 off, 1 idle, 2 running, 3 alarm: running ``[2]``,
    planned ``[1, 2, 3]``); ``total``: a counter of the parts made; ``good`` or ``defects``:
    a counter of good parts or of rejects; ``ideal_cycle``: the time one part takes at the
    rated speed. Only ``state`` is required: the evidence names what is not declared.
    """

    state: Name = Field(description="the tag holding the machine's state")
    running: Annotated[tuple[float, ...], Field(min_length=1, max_length=16)] = Field(
        description="state values that count as running"
    )
    planned: Annotated[tuple[float, ...], Field(min_length=1, max_length=16)] = Field(
        description="state values that count as planned production time (running included)"
    )
    total: Name | None = Field(default=None, description="counter tag of the parts made")
    good: Name | None = Field(default=None, description="counter tag of the good parts")
    defects: Name | None = Field(default=None, description="counter tag of the rejects")
    ideal_cycle: Duration | None = Field(
        default=None, description="the time one part takes at the rated speed"
    )

    @model_validator(mode="after")
    def _consistent(self) -> OeeConfig:
        identifiers.OeeSignals.check(self)
        if self.ideal_cycle is not None and not 0 < self.ideal_cycle <= 86400:
            raise ValueError("'ideal_cycle' must be above 0 and at most 24h")
        return self

    def tags(self) -> dict[str, str]:
        """The declared tags by role."""
        roles = {"state": self.state, "total": self.total, "good": self.good,
                 "defects": self.defects}  # fmt: skip
        return {role: tag for role, tag in roles.items() if tag is not None}


class DeviceInfo(StrictModel):
    """What the identifier record and the evidence say about a machine."""

    manufacturer: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=128)
    serial: str | None = Field(default=None, max_length=128)
    location: str | None = Field(default=None, max_length=256)
    key_equipment: bool = Field(
        default=True, description="counts for the production-device networking rate"
    )
    stages: tuple[StageField, ...] = ()
    oee: OeeConfig | None = Field(
        default=None, description="the tags OEE is computed from (docs/evidence.md, OEE)"
    )


class Device(StrictModel):
    """One PLC or controller, named by its identifier."""

    name: Name
    id: IdentifierStr
    connection: Connection
    info: DeviceInfo = DeviceInfo()
    groups: Annotated[tuple[Group, ...], AfterValidator(non_empty)]

    @model_validator(mode="after")
    def _tags(self) -> Device:
        seen: dict[str, str] = {}
        for group in self._unique("group", [g.name for g in self.groups]):
            for tag in next(g for g in self.groups if g.name == group).tags:
                if tag.name in seen:
                    raise ValueError(
                        f"duplicate tag {tag.name!r} (in groups {seen[tag.name]!r} and {group!r})"
                    )
                seen[tag.name] = group
        tags = [tag for group in self.groups for tag in group.tags]
        if self.info.oee is not None:
            by_name = {tag.name: tag for tag in tags}
            for role, name in self.info.oee.tags().items():
                if name not in by_name:
                    raise ValueError(f"info.oee.{role}: the device has no tag {name!r}")
                if not (by_name[name].type.numeric or by_name[name].type is DataType.BOOL):
                    raise ValueError(
                        f"info.oee.{role}: tag {name!r} is {by_name[name].type}, not a number"
                    )
        if isinstance(self.connection, OpcUa):
            for tag in tags:
                if not _OPCUA_NODEID.fullmatch(tag.address):
                    raise ValueError(
                        f"tag {tag.name!r}: {tag.address!r} is not an OPC UA NodeId "
                        "such as 'ns=2;s=Line1/Press/Speed' or 'ns=2;i=1001'"
                    )
        else:
            _check_modbus(tags, self.connection)
        return self

    @staticmethod
    def _unique(kind: str, names: list[str]) -> list[str]:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate {kind} name {dupes[0]!r}")
        return names


def _check_modbus(tags: list[Tag], options: ModbusOptions) -> None:
    unreadable = options.unreadable_ranges()
    occupied: dict[tuple[ModbusTable, int], list[tuple[str, int]]] = {}
    for tag in tags:
        try:
            addr, count = tag.modbus_span()
        except ValueError as exc:
            raise ValueError(f"tag {tag.name!r}: {exc}") from None
        if addr.table.is_bits and tag.type is not DataType.BOOL:
            raise ValueError(f"tag {tag.name!r}: {addr.table.value} holds bits; type must be bool")
        if addr.bit is not None and tag.type is not DataType.BOOL:
            raise ValueError(f"tag {tag.name!r}: a register bit must have type bool")
        if not addr.table.is_bits and addr.bit is None and tag.type is DataType.BOOL:
            raise ValueError(f"tag {tag.name!r}: a bool in a register needs a bit, e.g. hr:10.0")
        if addr.address + count - 1 > 0xFFFF:
            raise ValueError(f"tag {tag.name!r}: {tag.type} at {addr} runs past address 65535")
        if not addr.table.is_bits and count > options.max_registers:
            raise ValueError(
                f"tag {tag.name!r}: {count} registers do not fit in one request "
                f"of max_registers {options.max_registers}"
            )
        for table, first, last in unreadable:
            if table is addr.table and addr.address <= last and first <= addr.address + count - 1:
                raise ValueError(
                    f"tag {tag.name!r} at {addr} lies in the unreadable range "
                    f"{table.value}:{first}-{last}"
                )
        mask = tag.register_mask()
        for reg in range(addr.address, addr.address + count):
            users = occupied.setdefault((addr.table, reg), [])
            for other, other_mask in users:
                if mask & other_mask:
                    raise ValueError(
                        f"tag {tag.name!r} overlaps tag {other!r} at {addr.table.value}:{reg}"
                    )
            users.append((tag.name, mask))
