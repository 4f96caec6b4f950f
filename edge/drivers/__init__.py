"""Drivers: one sub-package per protocol, each self-contained (driver, config, codec, README).

:func:`drivers_for` gives the drivers that read a list of devices; each protocol's library
(pymodbus, asyncua) loads only when a device needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge._model import Device
    from edge._samples import SampleStream


def drivers_for(devices: Sequence[Device], stream: SampleStream | None = None) -> list[Any]:
    """A Modbus driver for the Modbus devices and an OPC UA driver for the OPC UA ones (async
    context managers that put into ``stream``; ``read_once()`` works without one)."""
    drivers: list[Any] = []
    if modbus := [d for d in devices if d.connection.protocol != "opcua"]:
        from edge.drivers.modbus import ModbusDriver  # noqa: PLC0415

        drivers.append(ModbusDriver(modbus, stream))
    if opcua := [d for d in devices if d.connection.protocol == "opcua"]:
        from edge.drivers.opcua import OpcUaDriver  # noqa: PLC0415

        drivers.append(OpcUaDriver(opcua, stream))
    return drivers
