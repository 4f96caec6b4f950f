"""One field connection (a TCP endpoint or a serial line) and the lock that serialises it.

Modbus is strictly request/response on a connection, and pymodbus serialises a client's
requests anyway, so every device behind one endpoint (unit ids behind an RS-485 gateway, slaves
on one serial bus) shares one :class:`Link` and takes its lock per request. Devices on other
links are never held up by it.

pymodbus's own reconnect loop is switched off (``reconnect_delay=0``): the driver decides when
to reconnect, with its backoff, and after a timeout it drops the connection so that a late
answer to the old request can never be taken for the answer to the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from edge._model import ModbusRtu, ModbusTcp
from edge.drivers.modbus.errors import (
    EXCEPTION_NAMES,
    DeviceBusy,
    DeviceRefused,
    DeviceTimeout,
    DeviceUnavailable,
    IllegalAddress,
)
from edge.drivers.modbus.planner import Request

logger = logging.getLogger(__name__)

_BUSY = 6
_ILLEGAL_ADDRESS = 2
_GATEWAY_SILENT = (10, 11)


def link_key(connection: ModbusTcp | ModbusRtu) -> tuple[object, ...]:
    """Devices with the same key share one link."""
    if isinstance(connection, ModbusTcp):
        return ("tcp", connection.host, connection.port, connection.framer)
    return ("serial", connection.port)


class Link:
    """A connection to one endpoint, opened on demand, with its backup host if configured."""

    def __init__(self, connection: ModbusTcp | ModbusRtu) -> None:
        self.settings = connection
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._endpoints: list[tuple[str, int]] = []
        if isinstance(connection, ModbusTcp):
            self._endpoints.append((connection.host, connection.port))
            if connection.backup_host is not None:
                port = connection.backup_port or connection.port
                self._endpoints.append((connection.backup_host, port))
        self._current = 0
        self._frame_gap = connection.frame_gap if isinstance(connection, ModbusRtu) else None
        self.requests = 0
        self.connects = 0

    @property
    def endpoint(self) -> str:
        if isinstance(self.settings, ModbusRtu):
            return self.settings.port
        host, port = self._endpoints[self._current]
        return f"{host}:{port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _new_client(self, index: int) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.settings
        if isinstance(s, ModbusRtu):
            return AsyncModbusSerialClient(
                s.port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                timeout=s.timeout,
                retries=s.retries,
                reconnect_delay=0,
            )
        host, port = self._endpoints[index]
        return AsyncModbusTcpClient(
            host,
            port=port,
            framer=FramerType.RTU if s.framer == "rtu" else FramerType.SOCKET,
            timeout=s.timeout,
            retries=s.retries,
            reconnect_delay=0,
        )

    async def _connect(self, device: str) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """Connect, trying the current endpoint first and then the other (backup) one."""
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        order = [self._current, *(i for i in range(len(self._endpoints)) if i != self._current)]
        for index in order or [0]:
            client = self._new_client(index)
            if await client.connect():
                if index != self._current:
                    logger.warning(
                        "device %r: switched to %s",
                        device,
                        "%s:%d" % self._endpoints[index],  # noqa: UP031
                    )
                self._current = index
                self._client = client
                self.connects += 1
                return client
            client.close()
        raise DeviceUnavailable(device, f"cannot connect to {self.endpoint}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(
        self, device: str, unit: int, request: Request, busy_retries: int, busy_delay: float
    ) -> Sequence[int] | Sequence[bool]:
        """The registers or bits of one request; raises a :mod:`errors` exception otherwise."""
        for attempt in range(busy_retries + 1):
            async with self.lock:
                response = await self._execute(device, unit, request)
            if not response.isError():
                payload: Sequence[int] | Sequence[bool] = (
                    response.bits if request.table.is_bits else response.registers
                )
                if len(payload) < request.count:
                    raise DeviceRefused(
                        device, 0, f"short answer: {len(payload)} of {request.count} at {request}"
                    )
                return payload
            code = int(response.exception_code)
            where = f"fc{request.function_code} {request.start}+{request.count}"
            if code == _BUSY and attempt < busy_retries:
                await asyncio.sleep(busy_delay * 2**attempt)
                continue
            name = EXCEPTION_NAMES.get(code, f"exception {code}")
            if code == _BUSY:
                raise DeviceBusy(device, code, f"{name} at {where}, {busy_retries} retries")
            if code == _ILLEGAL_ADDRESS:
                raise IllegalAddress(device, code, f"{name} at {where}")
            if code in _GATEWAY_SILENT:
                raise DeviceTimeout(device, f"{name} at {where}")
            raise DeviceRefused(device, code, f"{name} at {where}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _execute(self, device: str, unit: int, request: Request) -> Any:
        client = await self._connect(device)
        self.requests += 1
        call = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }[request.function_code]
        try:
            return await call(request.start, count=request.count, device_id=unit)
        except ModbusIOException as exc:
            self.close()  # a late answer must not be read as the next request's
            raise DeviceTimeout(device, f"no answer from {self.endpoint}: {exc}") from exc
        except ConnectionException as exc:
            self.close()
            raise DeviceUnavailable(device, f"connection to {self.endpoint} lost: {exc}") from exc
        except ModbusException as exc:
            self.close()
            raise DeviceUnavailable(device, f"{self.endpoint}: {exc}") from exc
        finally:
            if self._frame_gap:
                await asyncio.sleep(self._frame_gap)
