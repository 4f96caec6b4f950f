"""Southbound: the device → group → tag model (and, with issue #5, the drivers).

Public API::

    Device, Group, Tag              the collection model, validated by pydantic
    ModbusTcp, ModbusRtu, OpcUa     connection settings, chosen by ``protocol``
    ModbusAddress, parse_modbus_address
    DataType, Stage, DeviceInfo
"""

from edge._model import (
    BYTE_ORDERS,
    Connection,
    DataType,
    Device,
    DeviceInfo,
    Group,
    ModbusAddress,
    ModbusRtu,
    ModbusTable,
    ModbusTcp,
    OpcUa,
    Stage,
    StrictModel,
    Tag,
    parse_duration,
    parse_modbus_address,
)

__all__ = [
    "BYTE_ORDERS",
    "Connection",
    "DataType",
    "Device",
    "DeviceInfo",
    "Group",
    "ModbusAddress",
    "ModbusRtu",
    "ModbusTable",
    "ModbusTcp",
    "OpcUa",
    "Stage",
    "StrictModel",
    "Tag",
    "parse_duration",
    "parse_modbus_address",
]
