"""OPC UA driver (polling with chunked Reads, or subscriptions); see README.md in this folder.

Public API::

    OpcUaDriver         reads many devices into a SampleStream (async context manager)
    DeviceReader        supervises one device's session; OpcUaDriver builds these
    compile_device      a device config → its groups' nodes and codecs (DevicePlan)

Exceptions (``errors``)::

    OpcUaError
    ├── DeviceUnavailable
    └── SecurityRejected
"""

from edge.drivers.opcua.config import DevicePlan, GroupPlan, compile_device
from edge.drivers.opcua.driver import DeviceReader, DeviceStats, OpcUaDriver
from edge.drivers.opcua.errors import DeviceUnavailable, OpcUaError, SecurityRejected

__all__ = [
    "DevicePlan",
    "DeviceReader",
    "DeviceStats",
    "DeviceUnavailable",
    "GroupPlan",
    "OpcUaDriver",
    "OpcUaError",
    "SecurityRejected",
    "compile_device",
]
