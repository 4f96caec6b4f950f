"""What can go wrong talking to an OPC UA server, translated from asyncua at the boundary.

::

    OpcUaError                  every error names its device (.device)
    ├── DeviceUnavailable       no session: refused, dropped, no answer within the timeout,
    │                           the session or channel closed by the server
    └── SecurityRejected        the server refused our certificate, policy or login; a retry
                                will not help until the config or the server changes
                                (still retried with backoff: an operator may fix the server)
"""

from __future__ import annotations


class OpcUaError(Exception):
    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device {device!r}: {message}")


class DeviceUnavailable(OpcUaError):
    pass


class SecurityRejected(OpcUaError):
    pass
