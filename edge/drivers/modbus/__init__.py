"""Modbus TCP, RTU and RTU-over-TCP driver; see README.md in this folder.

Public API::

    ModbusDriver        reads many devices into a SampleStream (async context manager)
    DeviceReader        polls one device's groups; ModbusDriver builds these
    compile_device      a device config → its planned requests (DevicePlan)

Exceptions (``errors``)::

    ModbusError
    ├── DeviceUnavailable
    │   └── DeviceTimeout
    └── DeviceRefused
        ├── IllegalAddress
        └── DeviceBusy
"""

from edge.drivers.modbus.config import DevicePlan, GroupPlan, compile_device
from edge.drivers.modbus.driver import DeviceReader, DeviceStats, ModbusDriver
from edge.drivers.modbus.errors import (
    DeviceBusy,
    DeviceRefused,
    DeviceTimeout,
    DeviceUnavailable,
    IllegalAddress,
    ModbusError,
)

__all__ = [
    "DeviceBusy",
    "DevicePlan",
    "DeviceReader",
    "DeviceRefused",
    "DeviceStats",
    "DeviceTimeout",
    "DeviceUnavailable",
    "GroupPlan",
    "IllegalAddress",
    "ModbusDriver",
    "ModbusError",
    "compile_device",
]
