"""The fault-injection HTTP interface: JSON over HTTP on 127.0.0.1 (FastAPI, uvicorn).

``GET /machines`` lists machines and endpoints; ``GET /faults`` shows the faults that are on;
``PUT /faults/{target}/{kind}`` with a JSON object of parameters switches one on (or fires
``drop``/``restart``); ``DELETE /faults/{target}/{kind}``, ``DELETE /faults/{target}`` and
``DELETE /faults`` switch them off. Errors answer 400 (bad fault) or 404 (unknown target)
with ``{"detail": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, HTTPException

from simulators._exceptions import EndpointError, FaultError, UnknownMachine
from simulators._faults import Faults

logger = logging.getLogger(__name__)


def create_app(faults: Faults, describe: Callable[[], list[dict[str, Any]]]) -> FastAPI:
    app = FastAPI(title="Guantong PLC simulator: fault injection", docs_url=None, redoc_url=None)

    @app.get("/machines")
    async def machines() -> list[dict[str, Any]]:
        return describe()

    @app.get("/faults")
    async def state() -> dict[str, Any]:
        return faults.state()

    @app.put("/faults/{target}/{kind}")
    async def inject(
        target: str, kind: str, params: Annotated[dict[str, Any] | None, Body()] = None
    ) -> dict[str, Any]:
        try:
            return await faults.inject(target, kind, **(params or {}))
        except UnknownMachine as exc:
            raise HTTPException(404, str(exc)) from None
        except FaultError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.delete("/faults/{target}/{kind}")
    async def clear_kind(target: str, kind: str) -> dict[str, Any]:
        return await _clear(faults, target, kind)

    @app.delete("/faults/{target}")
    async def clear_target(target: str) -> dict[str, Any]:
        return await _clear(faults, target, None)

    @app.delete("/faults")
    async def clear_all() -> dict[str, Any]:
        return await _clear(faults, None, None)

    return app


async def _clear(faults: Faults, target: str | None, kind: str | None) -> dict[str, Any]:
    try:
        await faults.clear(target, kind)
    except UnknownMachine as exc:
        raise HTTPException(404, str(exc)) from None
    except FaultError as exc:
        raise HTTPException(400, str(exc)) from None
    return faults.state()


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: whoever runs the process decides about signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """Serves the fault interface on ``host:port`` (0: a free port) until stopped."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self.port = port
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say TCP
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise EndpointError("control", f"cannot listen on {self.host}:{self.port}") from exc
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, lifespan="off", ws="none", log_config=None, access_log=False,
            timeout_graceful_shutdown=2, server_header=False,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="sim-control")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"fault interface on {self.url} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._task = None
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
