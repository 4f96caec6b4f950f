"""Southbound: the device → group → tag model, the samples drivers produce, and the drivers.

Public API::

    Device, Group, Tag              the collection model, validated by pydantic
    ModbusTcp, ModbusRtu, OpcUa     connection settings, chosen by ``protocol``
    ModbusOptions                   timeouts, retries, request planning of a Modbus device
    ModbusAddress, parse_modbus_address, parse_modbus_range
    DataType, Stage, DeviceInfo, OeeConfig
    Sample, Quality, Batch, ConnectivityEvent
                                    what drivers produce (``edge._samples``, a light leaf)
    SampleStream, StreamClosed      the bounded async stream of batches the gateway consumes

Drivers live in ``edge.drivers.<protocol>``.

Only the samples load eagerly: a consumer of samples must not pull in pydantic with them. The
config model loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge._samples import (
    Batch,
    ConnectivityEvent,
    Quality,
    Sample,
    SampleStream,
    StreamClosed,
    Value,
)

if TYPE_CHECKING:
    from edge._model import (
        BYTE_ORDERS,
        Connection,
        DataType,
        Device,
        DeviceInfo,
        Group,
        ModbusAddress,
        ModbusOptions,
        ModbusRtu,
        ModbusTable,
        ModbusTcp,
        OeeConfig,
        OpcUa,
        Stage,
        Tag,
        parse_modbus_address,
        parse_modbus_range,
    )

_LAZY = {
    "edge._model": ("BYTE_ORDERS", "Connection", "DataType", "Device", "DeviceInfo", "Group",
                    "ModbusAddress", "ModbusOptions", "ModbusRtu", "ModbusTable", "ModbusTcp",
                    "OeeConfig", "OpcUa", "Stage", "Tag",
                    "parse_modbus_address", "parse_modbus_range"),
}  # fmt: skip
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BYTE_ORDERS",
    "Batch",
    "Connection",
    "ConnectivityEvent",
    "DataType",
    "Device",
    "DeviceInfo",
    "Group",
    "ModbusAddress",
    "ModbusOptions",
    "ModbusRtu",
    "ModbusTable",
    "ModbusTcp",
    "OeeConfig",
    "OpcUa",
    "Quality",
    "Sample",
    "SampleStream",
    "Stage",
    "StreamClosed",
    "Tag",
    "Value",
    "parse_modbus_address",
    "parse_modbus_range",
]
