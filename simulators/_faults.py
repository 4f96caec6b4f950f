"""Fault injection: switch faults on and off while clients are connected.

Endpoint faults act on connections: ``drop`` (close every connection now), ``hang`` (keep
connections open, never answer), ``latency`` (answer ``seconds`` late), ``restart`` (go away
for ``downtime`` seconds, refusing connections, then come back). Machine faults act on values:
``exception`` (every Modbus request to the unit answers exception ``code``: ``device_busy``,
``illegal_address``…), ``silent`` (the Modbus unit never answers while the others on its line
do), ``status`` (every OPC UA value of the machine carries a Bad or Uncertain status ``code``,
e.g. ``BadSensorFailure``), ``values`` (``mode`` ``nan`` or ``out_of_range``), ``state``
(the machine stays ``off``, ``idle``, ``running`` or ``alarm``, its counters following).

``drop`` and ``restart`` are events; the others stay on until cleared.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol

from asyncua import ua

from simulators._exceptions import FaultError, UnknownMachine
from simulators._machine import MODBUS_EXCEPTIONS, Machine, MachineFaults
from simulators._values import State

logger = logging.getLogger(__name__)

ENDPOINT_FAULTS = ("drop", "hang", "latency", "restart")
_STATES = {state.name.lower(): state for state in State}
MACHINE_FAULTS = ("exception", "silent", "status", "values", "state")


class FaultableEndpoint(Protocol):
    name: str
    hang: bool
    latency: float

    def drop(self) -> int: ...

    def restart(self, downtime: float) -> None: ...


def _number(params: Mapping[str, Any], key: str, default: float | None, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{key!r} must be a number of seconds")
    if not 0 < value <= high or math.isnan(value):
        raise FaultError(f"{key!r} must be above 0 and at most {high}")
    return float(value)


def _no_extra(params: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(params) - allowed)
    if extra:
        raise FaultError(f"unknown parameter {extra[0]!r}")


class Faults:
    """The faults of a running simulator, by endpoint or machine name."""

    def __init__(
        self,
        endpoints: Mapping[str, FaultableEndpoint],
        machines: Mapping[str, tuple[Machine, FaultableEndpoint, str]],
    ) -> None:
        self._endpoints = endpoints
        #: machine name → (machine, its endpoint, the endpoint's protocol)
        self._machines = machines

    async def inject(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """Switch a fault on (or fire a ``drop``/``restart``); return what was done."""
        if target in self._endpoints:
            result = self._endpoint_fault(self._endpoints[target], kind, params)
        elif target in self._machines:
            machine, endpoint, protocol = self._machines[target]
            result = self._machine_fault(machine, protocol, kind, params)
            await _refresh(endpoint)
        else:
            raise UnknownMachine(target)
        logger.info("fault on %s: %s", target, result)
        return result

    async def clear(self, target: str | None = None, kind: str | None = None) -> None:
        """Switch off ``kind`` (or every fault) of ``target`` (or of everything)."""
        if target is not None and target not in self._endpoints and target not in self._machines:
            raise UnknownMachine(target)
        known = ENDPOINT_FAULTS + MACHINE_FAULTS
        if kind is not None and kind not in known:
            raise FaultError(f"unknown fault {kind!r}; one of {', '.join(known)}")
        logger.info("faults off: %s of %s", kind or "every fault", target or "everything")
        for name, endpoint in self._endpoints.items():
            if target in (None, name):
                if kind in (None, "hang"):
                    endpoint.hang = False
                if kind in (None, "latency"):
                    endpoint.latency = 0.0
        off = MachineFaults()
        for name, (machine, endpoint, _) in self._machines.items():
            if target in (None, name):
                for field in MACHINE_FAULTS:
                    if kind in (None, field):
                        _clear_machine(machine, field, off)
                await _refresh(endpoint)

    def state(self) -> dict[str, Any]:
        """Every fault that is on, by endpoint and machine."""
        endpoints = {
            name: {
                k: v
                for k, v in (("hang", ep.hang), ("latency", ep.latency))
                if v  # only what is on
            }
            for name, ep in self._endpoints.items()
        }
        machines = {name: m.faults.active() for name, (m, _, _) in self._machines.items()}
        return {
            "endpoints": {k: v for k, v in endpoints.items() if v},
            "machines": {k: v for k, v in machines.items() if v},
        }

    def _endpoint_fault(
        self, endpoint: FaultableEndpoint, kind: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        if kind == "drop":
            _no_extra(params, set())
            return {"dropped": endpoint.drop()}
        if kind == "hang":
            _no_extra(params, set())
            endpoint.hang = True
            return {"hang": True}
        if kind == "latency":
            _no_extra(params, {"seconds"})
            endpoint.latency = _number(params, "seconds", None, 60.0)
            return {"latency": endpoint.latency}
        if kind == "restart":
            _no_extra(params, {"downtime"})
            downtime = _number(params, "downtime", 2.0, 600.0)
            endpoint.restart(downtime)
            return {"restart": downtime}
        if kind in MACHINE_FAULTS:
            raise FaultError(f"{kind!r} is a fault of a machine, not of endpoint {endpoint.name!r}")
        raise FaultError(f"unknown fault {kind!r}; one of {', '.join(ENDPOINT_FAULTS)}")

    @staticmethod
    def _machine_fault(
        machine: Machine, protocol: str, kind: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        if kind == "exception":
            _no_extra(params, {"code"})
            if protocol == "opcua":
                raise FaultError(f"{machine.name} is on OPC UA: use the 'status' fault")
            code = params.get("code", "device_busy")
            if code not in MODBUS_EXCEPTIONS:
                raise FaultError(
                    f"unknown Modbus exception {code!r}; one of {', '.join(MODBUS_EXCEPTIONS)}"
                )
            machine.faults.exception = MODBUS_EXCEPTIONS[code]
            return {"exception": code}
        if kind == "silent":
            _no_extra(params, set())
            if protocol == "opcua":
                raise FaultError(f"{machine.name} is on OPC UA: 'silent' is for Modbus units")
            machine.faults.silent = True
            return {"silent": True}
        if kind == "status":
            _no_extra(params, {"code"})
            if protocol != "opcua":
                raise FaultError(f"{machine.name} is on Modbus: use the 'exception' fault")
            code = params.get("code", "BadSensorFailure")
            if not (
                isinstance(code, str)
                and code.startswith(("Bad", "Uncertain"))
                and isinstance(getattr(ua.StatusCodes, code, None), int)
            ):
                raise FaultError(f"{code!r} is not a Bad or Uncertain OPC UA status code")
            machine.faults.status = code
            return {"status": code}
        if kind == "values":
            _no_extra(params, {"mode"})
            mode = params.get("mode", "nan")
            if mode not in ("nan", "out_of_range"):
                raise FaultError(f"values mode {mode!r}: use 'nan' or 'out_of_range'")
            machine.faults.values = mode
            return {"values": mode}
        if kind == "state":
            return _force(machine, params)
        if kind in ENDPOINT_FAULTS:
            raise FaultError(f"{kind!r} is a fault of an endpoint, not of machine {machine.name!r}")
        raise FaultError(f"unknown fault {kind!r}; one of {', '.join(MACHINE_FAULTS)}")


def _force(machine: Machine, params: Mapping[str, Any]) -> dict[str, Any]:
    _no_extra(params, {"state"})
    name = params.get("state", "idle")
    if name not in _STATES:
        raise FaultError(f"state {name!r}: use one of {', '.join(_STATES)}")
    machine.force(_STATES[name])
    return {"state": name}


def _clear_machine(machine: Machine, field: str, off: MachineFaults) -> None:
    if field != "state":
        setattr(machine.faults, field, getattr(off, field))
    elif machine.faults.state is not None:
        machine.force(None)  # its counters keep what the forced state made of them


async def _refresh(endpoint: object) -> None:
    """Show a value fault at once on OPC UA (Modbus computes every read anyway)."""
    refresh = getattr(endpoint, "refresh", None)
    if refresh is not None:
        await refresh()
        await asyncio.sleep(0)
