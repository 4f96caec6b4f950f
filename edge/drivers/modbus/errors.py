"""What can go wrong reading a Modbus device, translated from pymodbus at the boundary.

::

    ModbusError                 every error names its device (.device)
    ├── DeviceUnavailable       no connection: refused, reset, serial port missing
    │   └── DeviceTimeout       connected, but no answer within the timeout after retries
    │                           (also exceptions 10 and 11: a gateway whose target is silent)
    └── DeviceRefused           the device answered with a Modbus exception (.code)
        ├── IllegalAddress      exception 2: an address of the request does not exist
        └── DeviceBusy          exception 6, still after the configured busy retries
"""

from __future__ import annotations


class ModbusError(Exception):
    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {message}")


class DeviceUnavailable(ModbusError):
    pass


class DeviceTimeout(DeviceUnavailable):
    pass


class DeviceRefused(ModbusError):
    def __init__(self, device: str, code: int, message: str) -> None:
        self.code = code
        super().__init__(device, message)


class IllegalAddress(DeviceRefused):
    pass


class DeviceBusy(DeviceRefused):
    pass


#: Modbus exception codes by number, for messages
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
