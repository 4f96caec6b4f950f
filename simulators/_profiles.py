"""Machine profiles of the pilot industries: tags, register maps and how each value behaves.

A register map is laid out as the vendor manuals of such controllers are: a status block in
holding registers, process values in input registers (holding registers for the meter, as
meters do), scattered blocks with gaps between them (reading across a gap is an illegal
address), setpoints in a read-write area, and a spread of data types and byte orders.

Addresses use the syntax of gateway configs: ``hr:N``, ``ir:N``, ``co:N``, ``di:N`` and
``hr:N.BIT`` (0-based protocol address, bit 0 least significant). Byte orders name the bytes of
the big-endian value as ``A``, ``B``... in the order they travel on the wire.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from simulators._exceptions import UnknownProfile, UnknownTag
from simulators._signals import (
    AlarmCode,
    Analog,
    Const,
    Counter,
    Flag,
    Hours,
    Integral,
    Signal,
    StateCode,
    Text,
)
from simulators._values import Context, State, StateMix, as_float32

Value = bool | int | float | str

TYPE_SIZES = {
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "float32": 4,
    "float64": 8,
}
_INT_RANGES = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
}
_ADDRESS = re.compile(r"(co|di|hr|ir):(\d{1,5})(?:\.(\d{1,2}))?")
Table = Literal["co", "di", "hr", "ir"]


@lru_cache(maxsize=4096)
def _parse(address: str) -> tuple[int, int | None]:
    m = _ADDRESS.fullmatch(address)
    if m is None:
        raise ValueError(f"{address!r} is not a Modbus address such as hr:10 or hr:2.3")
    return int(m[2]), None if m[3] is None else int(m[3])


@dataclass(frozen=True, slots=True, eq=False)
class TagSpec:
    """One tag of a profile: where it lives in the register map and how its value behaves."""

    name: str
    type: str
    address: str
    signal: Signal = field(repr=False)
    order: str | None = None
    length: int | None = None
    scale: float = 1.0
    unit: str | None = None
    writable: bool = False
    group: str = "fast"
    stages: tuple[str, ...] = ()
    description: str = ""

    @property
    def table(self) -> Table:
        return self.address.split(":", 1)[0]  # type: ignore[return-value]

    @property
    def register(self) -> int:
        """The first protocol address."""
        return _parse(self.address)[0]

    @property
    def bit(self) -> int | None:
        return _parse(self.address)[1]

    @property
    def count(self) -> int:
        """Registers (or bits) the tag occupies."""
        if self.type == "bool":
            return 1
        if self.type == "string":
            return ((self.length or 0) + 1) // 2
        return TYPE_SIZES[self.type] // 2

    @property
    def opcua_type(self) -> str:
        """The OPC UA built-in type the tag is served as: scaled integers as Double."""
        if self.scale != 1.0:
            return "Double"
        return {
            "bool": "Boolean",
            "int16": "Int16",
            "uint16": "UInt16",
            "int32": "Int32",
            "uint32": "UInt32",
            "int64": "Int64",
            "uint64": "UInt64",
            "float32": "Float",
            "float64": "Double",
            "string": "String",
        }[self.type]

    def raw(self, engineering: Value) -> Value:
        """The value as stored in the registers (before ``scale``), typed and clamped."""
        if self.type == "bool":
            return bool(engineering)
        if self.type == "string":
            return str(engineering).encode("ascii")[: self.length or 0].decode("ascii")
        x = float(engineering) / self.scale
        if self.type == "float32":
            return as_float32(x)
        if self.type == "float64":
            return x
        low, high = _INT_RANGES[self.type]
        return min(max(math.floor(x + 0.5), low), high)

    def engineering(self, raw: Value) -> Value:
        """What an OPC UA client reads: raw integers times ``scale`` when scaled."""
        if self.scale == 1.0 or isinstance(raw, bool | str):
            return raw
        return raw * self.scale


@dataclass(frozen=True, slots=True)
class OeeSpec:
    """The tags of a profile OEE is computed from, as a gateway config declares them
    (``info.oee``): the state tag and its running and planned values, the part counter, the
    reject counter if the machine counts rejects, and the seconds one part takes when
    running (the counters' own cycle, so performance is 1 while the machine runs)."""

    total: str
    ideal_cycle: float
    defects: str | None = None
    state: str = "state"
    running: tuple[int, ...] = (int(State.RUNNING),)
    #: off is not planned production time; idle and alarm are
    planned: tuple[int, ...] = (int(State.IDLE), int(State.RUNNING), int(State.ALARM))


@dataclass(frozen=True, eq=False)
class Profile:
    """A kind of machine: its tags and how it spends its day."""

    name: str
    title: str
    tags: tuple[TagSpec, ...]
    mix: StateMix = field(default_factory=StateMix)
    manufacturer: str = ""
    model: str = ""
    stages: tuple[str, ...] = ()
    oee: OeeSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {t.name: t for t in self.tags})

    def tag(self, name: str) -> TagSpec:
        try:
            return self._by_name[name]  # type: ignore[attr-defined, no-any-return]
        except KeyError:
            raise UnknownTag(self.name, name) from None


def _tag(name: str, type_: str, address: str, signal: Signal, **kw: object) -> TagSpec:
    return TagSpec(name, type_, address, signal, **kw)  # type: ignore[arg-type]


RUN, IDLE, ALARM, OFF = State.RUNNING, State.IDLE, State.ALARM, State.OFF


def _status(alarms: tuple[int, ...], extra: tuple[TagSpec, ...] = ()) -> tuple[TagSpec, ...]:
    """The status block every profile starts with: state, alarm code and status bits."""
    return (
        _tag("state", "uint16", "hr:0", StateCode(), group="status", stages=("equipment",),
             description="0 off, 1 idle, 2 running, 3 alarm"),
        _tag("alarm_code", "uint16", "hr:1", AlarmCode(alarms), group="status",
             stages=("equipment", "safety")),
        _tag("running", "bool", "hr:2.0", Flag((RUN,)), group="status", stages=("equipment",)),
        _tag("idle", "bool", "hr:2.1", Flag((IDLE,)), group="status"),
        _tag("alarm", "bool", "hr:2.2", Flag((ALARM,)), group="status", stages=("safety",)),
        _tag("powered", "bool", "hr:2.7", Flag((OFF,), invert=True), group="status"),
        *extra,
    )  # fmt: skip


CNC = Profile(
    "cnc",
    "CNC machining centre",
    manufacturer="FANUC",
    model="0i-MF",
    stages=("equipment", "production"),
    oee=OeeSpec(total="part_count", ideal_cycle=45),
    mix=StateMix(running=0.65, idle=0.2, alarm=0.05, off=0.1),
    tags=(
        *_status((1001, 1002, 2001, 3010)),
        _tag("mode", "uint16", "hr:3", StateCode({OFF: 0, IDLE: 1, RUN: 3, ALARM: 1}),
             group="status", description="0 off, 1 manual, 2 MDI, 3 auto"),
        _tag("spindle_speed", "float32", "ir:100", Analog(8000, idle=0, alarm=0, wave=1500,
             noise=40, low=0), order="ABCD", unit="rpm", stages=("equipment",)),
        _tag("spindle_load", "float32", "ir:102", Analog(55, idle=2, alarm=0, wave=20,
             noise=3, low=0), order="CDAB", unit="%", stages=("equipment",)),
        _tag("feed_rate", "float32", "ir:104", Analog(1200, idle=0, alarm=0, wave=300,
             noise=25, low=0), order="BADC", unit="mm/min", stages=("production",)),
        _tag("axis_x", "int32", "ir:110", Analog(-125.0, idle=-300, wave=180, period=120,
             noise=0.5), order="CDAB", scale=0.001, unit="mm"),
        _tag("tool_wear", "float64", "ir:120", Analog(0.35, wave=0.2, period=7200, noise=0.01),
             order="ABCDEFGH", unit="mm", stages=("quality",)),
        _tag("part_count", "uint32", "ir:200", Counter(45), order="CDAB",
             stages=("production",), group="counters"),
        _tag("run_hours", "uint32", "ir:202", Hours(), order="ABCD", scale=0.01, unit="h",
             stages=("equipment",), group="counters"),
        _tag("program", "string", "hr:300", Text(("O1001-SHAFT", "O2040-FLANGE", "O3300-HUB")),
             length=16, group="status", stages=("production",)),
        _tag("feed_override", "uint16", "hr:400", Const(100), unit="%", writable=True,
             group="setpoints"),
        _tag("spindle_override", "uint16", "hr:401", Const(100), unit="%", writable=True,
             group="setpoints"),
        _tag("cycle_start_enable", "bool", "co:0", Const(True), writable=True,
             group="setpoints"),
        _tag("coolant_on", "bool", "co:1", Flag((RUN,)), group="status"),
        _tag("estop_ok", "bool", "di:0", Flag((ALARM,), invert=True), group="status",
             stages=("safety",)),
        _tag("door_closed", "bool", "di:1", Flag((RUN, ALARM)), group="status", stages=("safety",)),
    ),
)  # fmt: skip

INJECTION = Profile(
    "injection",
    "Injection moulding machine",
    manufacturer="Haitian",
    model="MA2500",
    stages=("equipment", "production", "quality"),
    oee=OeeSpec(total="shot_count", ideal_cycle=22.5),
    mix=StateMix(running=0.75, idle=0.1, alarm=0.05, off=0.1),
    tags=(
        *_status((101, 102, 205, 310)),
        *(
            _tag(f"barrel_zone{i}_temp", "int16", f"ir:{i - 1}", Analog(
                 230 - 10 * i, idle=200 - 10 * i, off=25, wave=3, noise=0.8),
                 scale=0.1, unit="°C", stages=("quality",))
            for i in range(1, 5)
        ),
        _tag("injection_pressure", "float32", "ir:10", Analog(1100, idle=0, alarm=0, wave=60,
             period=20, noise=15, low=0), order="DCBA", unit="bar", stages=("quality",)),
        _tag("holding_pressure", "float32", "ir:12", Analog(600, idle=0, alarm=0, wave=20,
             noise=8, low=0), order="ABCD", unit="bar", stages=("quality",)),
        _tag("cycle_time", "uint16", "ir:20", Analog(22.5, idle=0, alarm=0, noise=0.6),
             scale=0.01, unit="s", stages=("production",)),
        _tag("mould_temp", "int16", "ir:40", Analog(60, idle=55, off=25, wave=2, noise=0.3),
             scale=0.1, unit="°C"),
        _tag("shot_count", "uint32", "ir:30", Counter(22.5), order="ABCD",
             stages=("production",), group="counters"),
        _tag("recipe", "string", "hr:100", Text(("PP-CAP-32", "ABS-HOUSING", "PA66-CLIP")),
             length=12, group="status", stages=("production",)),
        *(
            _tag(f"zone{i}_setpoint", "int16", f"hr:{199 + i}", Const(230 - 10 * i),
                 scale=0.1, unit="°C", writable=True, group="setpoints")
            for i in range(1, 5)
        ),
        _tag("heater_enable", "bool", "co:0", Const(True), writable=True, group="setpoints"),
        _tag("safety_gate_closed", "bool", "di:0", Flag((RUN,)), group="status",
             stages=("safety",)),
    ),
)  # fmt: skip

KILN = Profile(
    "kiln",
    "Tunnel kiln for refractories",
    manufacturer="Siemens",
    model="S7-1500 via Modbus",
    stages=("equipment", "energy", "quality"),
    oee=OeeSpec(total="car_count", ideal_cycle=1800),
    mix=StateMix(running=0.85, idle=0.1, alarm=0.03, off=0.02, stay=0.97),
    tags=(
        *_status((11, 12, 21, 31)),
        _tag("zone1_temp", "float32", "ir:0", Analog(1250, idle=1100, alarm=1200, off=40,
             wave=12, period=1800, noise=1.5), order="ABCD", unit="°C", stages=("quality",)),
        _tag("zone2_temp", "float32", "ir:2", Analog(1480, idle=1300, alarm=1400, off=40,
             wave=15, period=1800, noise=1.5), order="CDAB", unit="°C", stages=("quality",)),
        _tag("zone3_temp", "float32", "ir:4", Analog(1380, idle=1200, alarm=1300, off=40,
             wave=10, period=1800, noise=1.5), order="BADC", unit="°C", stages=("quality",)),
        _tag("gas_flow", "uint16", "ir:10", Analog(320, idle=150, alarm=200, wave=25,
             noise=4), scale=0.1, unit="m³/h", stages=("energy",)),
        _tag("o2", "int16", "ir:11", Analog(3.2, idle=6, off=20.9, wave=0.4, noise=0.1),
             scale=0.01, unit="%", stages=("quality",)),
        _tag("furnace_pressure", "int16", "ir:12", Analog(-12, idle=-8, off=0, wave=3,
             noise=0.5), scale=0.1, unit="Pa"),
        _tag("gas_total", "uint64", "ir:20", Integral({RUN: 320, IDLE: 150, ALARM: 200}, start=5e5),
             order="ABCDEFGH", scale=0.001, unit="m³", stages=("energy",), group="counters"),
        _tag("car_count", "uint32", "ir:30", Counter(1800, start=2000), order="ABCD",
             stages=("production",), group="counters"),
        *(
            _tag(f"zone{i}_setpoint", "float32", f"hr:{98 + 2 * i}", Const(sp), order="ABCD",
                 unit="°C", writable=True, group="setpoints")
            for i, sp in ((1, 1250.0), (2, 1480.0), (3, 1380.0))
        ),
        _tag("batch", "string", "hr:200", Text(("MG-85-2611", "AL-70-2612", "SIC-2613"),
             every=8 * 3600), length=16, group="status", stages=("production",)),
        _tag("burner_on", "bool", "di:0", Flag((RUN, IDLE, ALARM)), group="status"),
    ),
)  # fmt: skip

EXTRUSION = Profile(
    "extrusion",
    "Aluminium extrusion press",
    manufacturer="SMS",
    model="1800 t front-loading",
    stages=("equipment", "production", "energy"),
    oee=OeeSpec(total="billet_count", ideal_cycle=95),
    mix=StateMix(running=0.6, idle=0.25, alarm=0.05, off=0.1),
    tags=(
        *_status((501, 502, 601, 777)),
        _tag("ram_pressure", "float32", "ir:0", Analog(210, idle=5, alarm=0, wave=25,
             period=90, noise=3, low=0), order="CDAB", unit="bar", stages=("production",)),
        _tag("billet_temp", "float32", "ir:2", Analog(480, idle=470, off=30, wave=8, noise=1),
             order="ABCD", unit="°C", stages=("quality",)),
        _tag("container_temp", "int16", "ir:4", Analog(430, idle=425, off=30, wave=4,
             noise=0.5), scale=0.1, unit="°C"),
        _tag("ram_speed", "float32", "ir:10", Analog(8.5, idle=0, alarm=0, wave=1.5, noise=0.2,
             low=0), order="BADC", unit="mm/s", stages=("production",)),
        _tag("exit_speed", "float32", "ir:12", Analog(35, idle=0, alarm=0, wave=4, noise=0.5,
             low=0), order="DCBA", unit="m/min"),
        _tag("billet_count", "uint32", "ir:20", Counter(95), order="CDAB",
             stages=("production",), group="counters"),
        _tag("puller_force", "float64", "ir:30", Analog(3.2, idle=0, alarm=0, wave=0.3,
             noise=0.05), order="GHEFCDAB", unit="kN"),
        _tag("die_id", "string", "hr:100", Text(("D-6063-A", "D-6061-B", "D-6082-C"),
             every=4 * 3600), length=8, group="status", stages=("production",)),
        _tag("ram_speed_setpoint", "float32", "hr:110", Const(8.5), order="CDAB",
             unit="mm/s", writable=True, group="setpoints"),
        _tag("pump_on", "bool", "co:0", Flag((RUN, IDLE)), group="status"),
    ),
)  # fmt: skip

REFLOW = Profile(
    "reflow",
    "SMT line with reflow oven",
    manufacturer="Heller",
    model="1913 MK5",
    stages=("equipment", "production", "quality"),
    oee=OeeSpec(total="board_count", defects="defect_count", ideal_cycle=30),
    mix=StateMix(running=0.75, idle=0.15, alarm=0.03, off=0.07),
    tags=(
        *_status((41, 42, 43)),
        _tag("conveyor_speed", "float32", "ir:0", Analog(80, idle=80, alarm=0, wave=0.5,
             noise=0.1), order="ABCD", unit="cm/min", stages=("production",)),
        *(
            _tag(f"zone{i}_temp", "int16", f"ir:{9 + i}", Analog(level, idle=level - 5,
                 off=25, wave=1, noise=0.4), scale=0.1, unit="°C", stages=("quality",))
            for i, level in enumerate((150, 165, 175, 185, 200, 235, 250, 180), start=1)
        ),
        _tag("o2_ppm", "uint16", "ir:20", Analog(850, idle=900, off=209000 // 10, wave=60,
             noise=10), unit="ppm", stages=("quality",)),
        _tag("board_count", "uint32", "ir:30", Counter(30), order="ABCD",
             stages=("production",), group="counters"),
        _tag("defect_count", "uint32", "ir:32", Counter(30 * 180, start=200), order="CDAB",
             stages=("quality",), group="counters"),
        _tag("program", "string", "hr:100", Text(("PCB-CTRL-V3", "PCB-PSU-12V", "PCB-LED-DRV")),
             length=20, group="status", stages=("production",)),
        _tag("n2_enable", "bool", "co:0", Const(True), writable=True, group="setpoints"),
        _tag("board_at_entry", "bool", "di:0", Flag((RUN,)), group="status"),
        _tag("board_at_exit", "bool", "di:1", Flag((RUN,)), group="status"),
    ),
)  # fmt: skip

METER = Profile(
    "meter",
    "Three-phase energy meter",
    manufacturer="Acrel",
    model="ADL400",
    stages=("energy",),
    mix=StateMix(running=0.8, idle=0.15, alarm=0.0, off=0.05, stay=0.9),
    tags=(
        _tag("state", "uint16", "hr:0", StateCode(), group="status",
             description="0 no load, 1 light load, 2 loaded"),
        *(
            _tag(f"voltage_{p}", "float32", f"hr:{10 + 2 * i}", Analog(230, off=230, wave=2,
                 noise=0.4), order="ABCD", unit="V", stages=("energy",))
            for i, p in enumerate("abc")
        ),
        *(
            _tag(f"current_{p}", "float32", f"hr:{20 + 2 * i}", Analog(62, idle=9, off=0,
                 wave=6, noise=0.8, low=0), order="CDAB", unit="A", stages=("energy",))
            for i, p in enumerate("abc")
        ),
        _tag("active_power", "float32", "hr:30", Analog(41, idle=6, off=0, wave=4, noise=0.5,
             low=0), order="DCBA", unit="kW", stages=("energy",)),
        _tag("power_factor", "int16", "hr:32", Analog(0.93, idle=0.78, off=1.0, noise=0.01),
             scale=0.001),
        _tag("frequency", "uint16", "hr:33", Analog(50, off=50, noise=0.02), scale=0.01,
             unit="Hz"),
        _tag("energy_import", "uint64", "hr:40", Integral({RUN: 41, IDLE: 6}, start=120000),
             order="GHEFCDAB", scale=0.01, unit="kWh", stages=("energy",), group="counters"),
        _tag("energy_import_f64", "float64", "hr:44", Integral({RUN: 41, IDLE: 6}, start=120000),
             order="HGFEDCBA", unit="kWh", group="counters"),
        _tag("reactive_energy", "int64", "hr:48", Integral({RUN: -4.5, IDLE: 2.0}, start=-1000),
             order="ABCDEFGH", scale=0.01, unit="kvarh", group="counters"),
        _tag("serial_number", "string", "hr:60", Const("ADL400-2311-0042"), length=16,
             group="status"),
    ),
)  # fmt: skip

COMPRESSOR = Profile(
    "compressor",
    "Screw air compressor",
    manufacturer="Atlas Copco",
    model="GA 37",
    stages=("equipment", "energy"),
    mix=StateMix(running=0.6, idle=0.3, alarm=0.02, off=0.08),
    tags=(
        *_status((61, 62, 63), extra=(
            _tag("loaded", "bool", "hr:2.3", Flag((RUN,)), group="status"),
        )),
        _tag("discharge_pressure", "uint16", "ir:0", Analog(7.5, idle=7.9, off=0, wave=0.2,
             period=60, noise=0.03), scale=0.01, unit="bar", stages=("equipment",)),
        _tag("discharge_temp", "int16", "ir:1", Analog(82, idle=70, alarm=105, off=20, wave=2,
             noise=0.3), scale=0.1, unit="°C", stages=("equipment", "safety")),
        _tag("motor_current", "float32", "ir:2", Analog(68, idle=22, alarm=0, wave=3, noise=1,
             low=0), order="BADC", unit="A", stages=("energy",)),
        _tag("load_percent", "uint16", "ir:4", Analog(85, idle=0, alarm=0, noise=2, low=0),
             unit="%"),
        _tag("running_hours", "uint32", "ir:10", Hours((RUN, IDLE)), order="CDAB", scale=0.1,
             unit="h", group="counters", stages=("equipment",)),
        _tag("load_hours", "uint32", "ir:12", Hours((RUN,)), order="CDAB", scale=0.1, unit="h",
             group="counters"),
        _tag("pressure_setpoint", "uint16", "hr:100", Const(7.5), scale=0.01, unit="bar",
             writable=True, group="setpoints"),
        _tag("remote_start", "bool", "co:0", Const(False), writable=True, group="setpoints"),
        _tag("dryer_ok", "bool", "di:0", Flag((ALARM,), invert=True), group="status"),
    ),
)  # fmt: skip

PROFILES: dict[str, Profile] = {
    p.name: p for p in (CNC, INJECTION, KILN, EXTRUSION, REFLOW, METER, COMPRESSOR)
}


def profile(name: str) -> Profile:
    """A profile of :data:`PROFILES`, or a generated line PLC ``plc-<N>`` with N tags."""
    found = PROFILES.get(name)
    if found is None:
        from simulators._plc import plc_profile  # noqa: PLC0415 - it imports this module

        found = plc_profile(name)
    if found is None:
        raise UnknownProfile(name)
    return found


def value(seed: int, profile_name: str, machine: str, tag: str, t: float) -> Value:
    """The raw value of ``tag`` (as stored in the registers) of ``machine`` at time ``t``.

    ``t`` is Unix time in seconds; values change on whole seconds. A tag that clients may
    write returns its initial value here; the servers keep what clients write.
    """
    prof = profile(profile_name)
    spec = prof.tag(tag)
    ctx = Context(seed, machine, prof.mix, math.floor(t))
    return spec.raw(spec.signal(ctx, spec.name))


def values(seed: int, profile_name: str, machine: str, t: float) -> dict[str, Value]:
    """Every tag of ``machine`` at ``t``: one state look-up shared by all tags."""
    prof = profile(profile_name)
    ctx = Context(seed, machine, prof.mix, math.floor(t))
    return {spec.name: spec.raw(spec.signal(ctx, spec.name)) for spec in prof.tags}


def state(seed: int, profile_name: str, machine: str, t: float) -> State:
    """The machine's state at ``t``."""
    prof = profile(profile_name)
    return Context(seed, machine, prof.mix, math.floor(t)).state
