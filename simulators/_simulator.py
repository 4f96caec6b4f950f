"""A factory brought to life: every endpoint of a factory file, its machines and its faults."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, Self

from simulators._control import ControlServer, create_app
from simulators._exceptions import EndpointError, UnknownMachine
from simulators._factory import (
    FactoryConfig,
    ModbusRtuEndpoint,
    ModbusTcpEndpoint,
    OpcUaEndpointConfig,
)
from simulators._faults import Faults
from simulators._machine import Clock, Machine
from simulators._modbus import ModbusEndpoint
from simulators._opcua import OpcUaEndpoint, node_path
from simulators._serial import PtyPair

logger = logging.getLogger(__name__)

Endpoint = ModbusEndpoint | OpcUaEndpoint


class Simulator:
    """Serves a factory file; an async context manager.

    Ports given as 0 are chosen when it starts; :meth:`describe` and the endpoint objects say
    which. ``faults`` is the Python side of the fault interface; the HTTP side runs when the
    file has a ``control`` section.
    """

    def __init__(
        self,
        factory: FactoryConfig,
        *,
        clock: Clock = time.time,
        base_dir: Path | None = None,
        only: Collection[str] | None = None,
    ) -> None:
        """``only`` names the endpoints to serve (default all), so that several processes can
        share a big factory between them."""
        known = {e.name for e in factory.endpoints}
        for name in only or ():
            if name not in known:
                raise EndpointError(name, "the factory has no such endpoint")
        served = known if not only else set(only)
        self.factory = factory
        self.base_dir = base_dir or Path.cwd()
        self.machines: dict[str, Machine] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._ptys: list[PtyPair] = []
        self._control: ControlServer | None = None
        self._stopped = asyncio.Event()
        members: dict[str, list[Machine]] = {e.name: [] for e in factory.endpoints}
        for line in factory.lines:
            for mc in line.machines:
                if mc.endpoint not in served:
                    continue
                machine = Machine(
                    mc.name, mc.profile, factory.seed, line=line.name,
                    unit_id=mc.unit_id or 0, clock=clock,
                )  # fmt: skip
                self.machines[mc.name] = machine
                members[mc.endpoint].append(machine)
        for config in factory.endpoints:
            if config.name in served:
                self.endpoints[config.name] = self._endpoint(config, members[config.name])
        protocol = {e.name: e.protocol for e in factory.endpoints}
        self.faults = Faults(
            self.endpoints,
            {
                mc.name: (
                    self.machines[mc.name],
                    self.endpoints[mc.endpoint],
                    protocol[mc.endpoint],
                )
                for mc in factory.machines()
                if mc.endpoint in served
            },
        )

    def _endpoint(
        self,
        config: ModbusTcpEndpoint | ModbusRtuEndpoint | OpcUaEndpointConfig,
        machines: list[Machine],
    ) -> Endpoint:
        if isinstance(config, OpcUaEndpointConfig):
            return OpcUaEndpoint(
                config.name, self.factory.name, machines, host=config.host, port=config.port,
                security=config.security, anonymous=config.anonymous,
                users={u.name: u.password for u in config.users},
            )  # fmt: skip
        if isinstance(config, ModbusTcpEndpoint):
            return ModbusEndpoint(
                config.name, machines, host=config.host, port=config.port, holes=config.holes
            )
        serial = config.device
        if config.pty_link is not None:
            pty = PtyPair(config.name, self.base_dir / config.pty_link)
            self._ptys.append(pty)
            serial = None  # known once socat has made the pair
        return ModbusEndpoint(
            config.name, machines, protocol="modbus-rtu", serial=serial,
            baudrate=config.baudrate, parity=config.parity, stopbits=config.stopbits,
        )  # fmt: skip

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        started = time.perf_counter()
        for pty in self._ptys:
            await pty.start()
            endpoint = self.endpoints[pty.name]
            assert isinstance(endpoint, ModbusEndpoint)  # noqa: S101 - built above as such
            endpoint.serial = str(pty.server_end)
        # every start finishes before a failure is raised, so that stop() finds them all
        results = await asyncio.gather(
            *(ep.start() for ep in self.endpoints.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.factory.control is not None:
            app = create_app(self.faults, self.describe)
            self._control = ControlServer(app, self.factory.control.host, self.factory.control.port)
            await self._control.start()
        logger.info(
            "factory %s: %d machines on %d endpoints in %.2f s",
            self.factory.name,
            len(self.machines),
            len(self.endpoints),
            time.perf_counter() - started,
        )

    async def stop(self) -> None:
        self._stopped.set()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        await asyncio.gather(*(ep.stop() for ep in self.endpoints.values()))
        for pty in self._ptys:
            await pty.stop()

    def request_stop(self) -> None:
        """Make :meth:`wait` return (for signal handlers)."""
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    @property
    def control_url(self) -> str | None:
        return None if self._control is None else self._control.url

    def machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            raise UnknownMachine(name) from None

    def endpoint_of(self, machine: str) -> Endpoint:
        name = next((m.endpoint for m in self.factory.machines() if m.name == machine), None)
        if name is None or name not in self.endpoints:
            raise UnknownMachine(machine)
        return self.endpoints[name]

    def address(self, endpoint: str) -> str:
        """Where clients reach an endpoint: ``host:port``, an OPC UA URL or a serial line."""
        ep = self.endpoints[endpoint]
        if isinstance(ep, OpcUaEndpoint):
            return ep.url
        if ep.protocol == "modbus-rtu":
            pty = next((p for p in self._ptys if p.name == endpoint), None)
            return str(pty.client_end if pty is not None else ep.serial)
        return f"{ep.host}:{ep.port}"

    def describe(self) -> list[dict[str, Any]]:
        """One entry per machine: where it is served and how to address it."""
        out = []
        for mc in self.factory.machines():
            ep = self.endpoints.get(mc.endpoint)
            if ep is None:
                continue
            machine = self.machines[mc.name]
            entry: dict[str, Any] = {
                "machine": mc.name,
                "line": machine.line,
                "profile": mc.profile,
                "endpoint": mc.endpoint,
                "protocol": "opcua" if isinstance(ep, OpcUaEndpoint) else ep.protocol,
                "address": self.address(mc.endpoint),
                "tags": len(machine.profile.tags),
            }
            if isinstance(ep, OpcUaEndpoint):
                entry["node"] = "ns=2;s=" + node_path(self.factory.name, machine, "")[:-1]
            else:
                entry["unit_id"] = mc.unit_id
            out.append(entry)
        return out
