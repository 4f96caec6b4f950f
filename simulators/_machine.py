"""A machine as the servers see it: its profile, what clients wrote, and its faults."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from simulators._exceptions import FaultError
from simulators._profiles import Profile, TagSpec, Value, profile
from simulators._values import Context, Forced, State, as_float32, timeline

Clock = Callable[[], float]
ValueFault = Literal["nan", "out_of_range"]

#: Modbus exception codes by the names the fault interface uses
MODBUS_EXCEPTIONS = {
    "illegal_function": 1,
    "illegal_address": 2,
    "illegal_value": 3,
    "device_failure": 4,
    "device_busy": 6,
    "gateway_path_unavailable": 10,
    "gateway_no_response": 11,
}

_TYPE_MAX: dict[str, float | int] = {
    "int16": (1 << 15) - 1,
    "uint16": (1 << 16) - 1,
    "int32": (1 << 31) - 1,
    "uint32": (1 << 32) - 1,
    "int64": (1 << 63) - 1,
    "uint64": (1 << 64) - 1,
    "float32": as_float32(float("inf")),
    "float64": sys.float_info.max,
}


def faulty(spec: TagSpec, raw: Value, mode: ValueFault | None) -> Value:
    """What a tag serves under a value fault.

    ``nan``: floating-point tags are NaN, other tags are unchanged. ``out_of_range``: every
    numeric tag holds the largest value of its type (a sensor wire break on a 4-20 mA input
    reads as full scale); bits and strings are unchanged.
    """
    if mode is None or spec.type in ("bool", "string"):
        return raw
    if mode == "nan":
        return math.nan if spec.type in ("float32", "float64") else raw
    return _TYPE_MAX[spec.type]


@dataclass
class MachineFaults:
    """Faults of one machine; the servers consult them on every request."""

    #: Modbus exception code returned for every request to this machine
    exception: int | None = None
    #: OPC UA status code (name, e.g. ``BadSensorFailure``) on every value of this machine
    status: str | None = None
    values: ValueFault | None = None
    #: the Modbus unit does not answer at all, as a dead device on an RS-485 line
    silent: bool = False
    #: the state forced on the machine (set through :meth:`Machine.force`)
    state: State | None = None

    def active(self) -> dict[str, object]:
        """The faults that are on, named as the fault interface names them."""
        names = {code: name for name, code in MODBUS_EXCEPTIONS.items()}
        out: dict[str, object] = {
            k: v for k, v in vars(self).items() if v is not None and v is not False
        }
        if self.exception is not None:
            out["exception"] = names.get(self.exception, self.exception)
        if self.state is not None:
            out["state"] = self.state.name.lower()
        return out


@dataclass
class Machine:
    """One simulated machine on one endpoint (a unit id or an OPC UA folder)."""

    name: str
    profile_name: str
    seed: int
    line: str = "Line1"
    unit_id: int = 1
    clock: Clock = time.time
    written: dict[str, Value] = field(default_factory=dict)
    faults: MachineFaults = field(default_factory=MachineFaults)

    def __post_init__(self) -> None:
        self.profile: Profile = profile(self.profile_name)
        self._forced = Forced()

    def force(self, state: State | None) -> None:
        """Keep the machine in ``state`` from now on (None: back to its timeline); its
        counters and hours follow the forced state, not the timeline."""
        line = timeline(self.seed, self.name, self.profile.mix)
        self._forced.force(line, state, math.floor(self.clock()))
        self.faults.state = state

    def raw(self, specs: Iterable[TagSpec], t: float) -> dict[str, Value]:
        """Raw values of ``specs`` at ``t``, as served: written values and faults applied."""
        forced = self._forced if self._forced.touched else None
        ctx = Context(self.seed, self.name, self.profile.mix, math.floor(t), forced)
        mode = self.faults.values
        out: dict[str, Value] = {}
        for spec in specs:
            if spec.writable and spec.name in self.written:
                raw = self.written[spec.name]
            else:
                raw = spec.raw(spec.signal(ctx, spec.name))
            out[spec.name] = faulty(spec, raw, mode)
        return out

    def write(self, spec: TagSpec, raw: Value) -> None:
        if not spec.writable:
            raise FaultError(f"{self.name}: tag {spec.name!r} is read-only")
        self.written[spec.name] = raw
