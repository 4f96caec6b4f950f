"""PLC simulators: the machines of the pilot industries over Modbus TCP/RTU and OPC UA.

Every value a simulator serves is a pure function of (seed, profile, machine, tag, t)
(:func:`value`), so a test or benchmark can compute exactly what a collector must have read.
Values change on whole seconds; machines change state (off, idle, running, alarm) on whole
minutes, in a pattern that repeats daily; counters and totals integrate since :data:`EPOCH`.

Public API: the value function and profiles (:func:`value`, :func:`values`, :data:`PROFILES`;
:class:`OeeSpec`, the tags a profile's OEE is computed from),
the register codec (:func:`encode`, :func:`decode`), the servers (:class:`ModbusEndpoint`,
:class:`OpcUaEndpoint`), the factory file and the simulator that serves it
(:func:`load_factory`, :class:`Simulator`), and fault injection (:class:`Faults`; a machine's
state can be forced, :meth:`Machine.force`).

Exceptions::

    SimulatorError
    ├── UnknownProfile      (also KeyError)  a machine names a profile that does not exist
    ├── UnknownTag          (also KeyError)  a tag its profile does not have
    ├── UnknownMachine      (also KeyError)  a machine the factory does not have
    ├── FactoryFileError    (also ValueError) a factory file with errors; .problems lists them
    ├── EndpointError       (also OSError)   an endpoint cannot start (port in use, no serial)
    └── FaultError          (also ValueError) a fault that cannot be applied
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simulators._exceptions import (
    EndpointError,
    FactoryFileError,
    FaultError,
    SimulatorError,
    UnknownMachine,
    UnknownProfile,
    UnknownTag,
)
from simulators._factory import FactoryConfig, load_factory
from simulators._machine import MODBUS_EXCEPTIONS, Machine, MachineFaults, faulty
from simulators._profiles import (
    PROFILES,
    OeeSpec,
    Profile,
    TagSpec,
    Value,
    profile,
    state,
    value,
    values,
)
from simulators._registers import decode, encode
from simulators._values import EPOCH, SEGMENT, TICK, State

if TYPE_CHECKING:
    from simulators._faults import Faults
    from simulators._modbus import ModbusEndpoint
    from simulators._opcua import OpcUaEndpoint
    from simulators._simulator import Simulator

#: the servers load pymodbus, asyncua and FastAPI: only on first use, so that reading a
#: factory file or computing values stays light
_LAZY = {
    "Faults": "simulators._faults",
    "ModbusEndpoint": "simulators._modbus",
    "OpcUaEndpoint": "simulators._opcua",
    "Simulator": "simulators._simulator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'simulators' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "EPOCH",
    "MODBUS_EXCEPTIONS",
    "PROFILES",
    "SEGMENT",
    "TICK",
    "EndpointError",
    "FactoryConfig",
    "FactoryFileError",
    "FaultError",
    "Faults",
    "Machine",
    "MachineFaults",
    "ModbusEndpoint",
    "OeeSpec",
    "OpcUaEndpoint",
    "Profile",
    "Simulator",
    "SimulatorError",
    "State",
    "TagSpec",
    "UnknownMachine",
    "UnknownProfile",
    "UnknownTag",
    "Value",
    "decode",
    "encode",
    "faulty",
    "load_factory",
    "profile",
    "state",
    "value",
    "values",
]
