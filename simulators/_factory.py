"""The factory file (``kind: factory``): which machines run where, on which ports and unit ids.

Loading is strict, as for every config of the project: an unknown field, a duplicate name, a
machine on an endpoint that does not exist, two machines on one unit id, a unit id on an OPC
UA endpoint or two endpoints on one port are errors, never repaired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulators._exceptions import FactoryFileError
from simulators._plc import MAX_TAGS, plc_profile
from simulators._profiles import PROFILES

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Firm(_Strict):
    """The firm the demo plays; its identifier prefix names gateway and devices."""

    name: str = Field(min_length=1, max_length=128)
    prefix: str = Field(
        pattern=r"^88(\.[0-9A-Za-z]+){2,}$",
        description="the firm's identifier prefix, e.g. 88.709.911",
    )


class ModbusTcpEndpoint(_Strict):
    name: Name
    protocol: Literal["modbus-tcp"]
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535, description="0 picks a free port (tests)")
    holes: Literal["refuse", "zero"] = Field(
        default="refuse",
        description="how addresses without a tag answer: illegal address, or zero",
    )


class ModbusRtuEndpoint(_Strict):
    """A serial line: ``device`` is opened as it is, or ``pty_link`` makes a pseudo-terminal
    pair with socat and links its client end there (for tests and demos without hardware)."""

    name: Name
    protocol: Literal["modbus-rtu"]
    device: str | None = None
    pty_link: str | None = None
    baudrate: int = Field(default=19200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _one_line(self) -> ModbusRtuEndpoint:
        if (self.device is None) == (self.pty_link is None):
            raise ValueError("give either 'device' or 'pty_link'")
        if self.pty_link is not None and self.parity != "N":
            # measured: Linux pseudo-terminals refuse a second tcsetattr with parity (EINVAL)
            raise ValueError("a pseudo-terminal line has no parity bits: use parity N")
        return self


class OpcUaUser(_Strict):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class OpcUaEndpointConfig(_Strict):
    name: Name
    protocol: Literal["opcua"]
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535, description="0 picks a free port (tests)")
    security: tuple[Literal["None", "Sign", "SignAndEncrypt"], ...] = ("None",)
    anonymous: bool = True
    users: tuple[OpcUaUser, ...] = ()

    @model_validator(mode="after")
    def _login(self) -> OpcUaEndpointConfig:
        if not self.security:
            raise ValueError("'security' needs at least one mode")
        if not self.anonymous and not self.users:
            raise ValueError("without anonymous login the endpoint needs 'users'")
        return self


Endpoint = Annotated[
    ModbusTcpEndpoint | ModbusRtuEndpoint | OpcUaEndpointConfig, Field(discriminator="protocol")
]


class MachineConfig(_Strict):
    name: Name
    profile: str
    endpoint: str
    unit_id: int | None = Field(default=None, ge=1, le=247)

    @model_validator(mode="after")
    def _known_profile(self) -> MachineConfig:
        if self.profile not in PROFILES and plc_profile(self.profile) is None:
            raise ValueError(
                f"unknown profile {self.profile!r}; one of {', '.join(sorted(PROFILES))}"
                f" or plc-<N> (N tags, up to {MAX_TAGS:,})"
            )
        return self


class LineConfig(_Strict):
    name: Name
    machines: tuple[MachineConfig, ...] = Field(min_length=1)


class Control(_Strict):
    """The HTTP fault-injection interface."""

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class Scale(_Strict):
    """Many Modbus TCP endpoints full of machines, for benchmarks: ``endpoints`` ports from
    ``base_port``, each with ``units`` machines (unit ids 1…units) taking the ``profiles`` in
    turn, on a line named ``line``. Machines are named ``<profile>-<endpoint>-<unit>``."""

    endpoints: int = Field(ge=1, le=200)
    units: int = Field(ge=1, le=247)
    base_port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    line: Name = "Scale"
    profiles: tuple[str, ...] = tuple(PROFILES)

    @model_validator(mode="after")
    def _sane(self) -> Scale:
        unknown = sorted(p for p in self.profiles if p not in PROFILES and not plc_profile(p))
        if unknown:
            raise ValueError(f"unknown profile {unknown[0]!r}")
        if not self.profiles:
            raise ValueError("'profiles' must not be empty")
        if self.base_port + self.endpoints - 1 > 65535:
            raise ValueError("the ports run past 65535")
        return self

    def expand(self) -> tuple[list[ModbusTcpEndpoint], LineConfig]:
        endpoints, machines = [], []
        for e in range(self.endpoints):
            name = f"scale-{e + 1:03d}"
            endpoints.append(
                ModbusTcpEndpoint(
                    name=name, protocol="modbus-tcp", host=self.host, port=self.base_port + e
                )
            )
            for unit in range(1, self.units + 1):
                profile = self.profiles[(e * self.units + unit - 1) % len(self.profiles)]
                machines.append(
                    MachineConfig(
                        name=f"{profile}-{e + 1:03d}-{unit:03d}",
                        profile=profile,
                        endpoint=name,
                        unit_id=unit,
                    )
                )
        return endpoints, LineConfig(name=self.line, machines=tuple(machines))


class FactoryConfig(_Strict):
    kind: Literal["factory"]
    name: Name = Field(description="the factory's folder under Objects in OPC UA")
    title: str | None = Field(default=None, max_length=256)
    firm: Firm
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    endpoints: tuple[Endpoint, ...] = ()
    lines: tuple[LineConfig, ...] = ()
    scale: Scale | None = Field(default=None, description="machines generated for benchmarks")
    control: Control | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FactoryConfig:
        if self.scale is not None:
            endpoints, line = self.scale.expand()
            object.__setattr__(self, "endpoints", (*self.endpoints, *endpoints))
            object.__setattr__(self, "lines", (*self.lines, line))
            object.__setattr__(self, "scale", None)  # expanded: what remains is what runs
        if not self.endpoints or not self.lines:
            raise ValueError("a factory needs 'endpoints' and 'lines' (or 'scale')")
        endpoints = {e.name: e for e in self.endpoints}
        _unique("endpoint name", [e.name for e in self.endpoints])
        _unique("line name", [line.name for line in self.lines])
        _unique("machine name", [m.name for m in self.machines()])
        ports = [(e.host, e.port) for e in self.endpoints if not isinstance(e, ModbusRtuEndpoint)]
        if self.control is not None:
            ports.append((self.control.host, self.control.port))
        _unique("host and port", [f"{h}:{p}" for h, p in ports if p != 0])
        units: dict[str, set[int]] = {}
        for machine in self.machines():
            endpoint = endpoints.get(machine.endpoint)
            if endpoint is None:
                raise ValueError(
                    f"machine {machine.name!r}: no endpoint named {machine.endpoint!r}"
                )
            if isinstance(endpoint, OpcUaEndpointConfig):
                if machine.unit_id is not None:
                    raise ValueError(f"machine {machine.name!r}: OPC UA has no unit ids")
                continue
            if machine.unit_id is None:
                raise ValueError(f"machine {machine.name!r}: a Modbus machine needs 'unit_id'")
            taken = units.setdefault(endpoint.name, set())
            if machine.unit_id in taken:
                raise ValueError(
                    f"machine {machine.name!r}: unit id {machine.unit_id} "
                    f"is already used on {endpoint.name!r}"
                )
            taken.add(machine.unit_id)
        return self

    def machines(self) -> list[MachineConfig]:
        return [m for line in self.lines for m in line.machines]

    def line_of(self, machine: str) -> str:
        return next(line.name for line in self.lines for m in line.machines if m.name == machine)

    def endpoint(self, name: str) -> ModbusTcpEndpoint | ModbusRtuEndpoint | OpcUaEndpointConfig:
        return next(e for e in self.endpoints if e.name == name)


def _unique(what: str, values: list[str]) -> None:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what} {dupes[0]!r}")


def load_factory(path: str | Path) -> FactoryConfig:
    """Read and validate a factory file; raise :class:`FactoryFileError` naming each problem.

    (The ``guantong`` command loads it through its own config loader, which adds line numbers.)
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FactoryFileError(str(path), [str(exc)]) from None
    try:
        return FactoryConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise FactoryFileError(str(path), problems) from None
