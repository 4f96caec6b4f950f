"""Serving an ASGI app (health, metrics, an API) from inside a running service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it decides what signals do."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Async context manager serving ``app`` on ``host:port``; ``url`` is known once entered,
    also for port 0. Leaving it finishes the requests in flight, then closes the socket."""

    def __init__(self, app: Any, host: str, port: int, *, name: str = "http") -> None:
        self._app = app
        self._address = (host, port)
        self._name = name
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def __aenter__(self) -> HttpServer:
        host = self._address[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and a socket made with proto 0 answers every request ~40 ms late (Nagle meets
        # delayed ACK)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self._address)
        bound, port = sock.getsockname()[:2]
        self.url = (
            f"http://[{bound}]:{port}" if family == socket.AF_INET6 else f"http://{bound}:{port}"
        )
        config = uvicorn.Config(
            self._app, lifespan="off", ws="none", log_config=None, access_log=False,
            timeout_graceful_shutdown=5, server_header=False,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self._name)
        try:
            while not self._server.started:
                if self._task.done():
                    await self._task  # raises what stopped it
                    raise RuntimeError(f"{self._name} on {self.url} stopped while starting")
                await asyncio.sleep(0.01)
        except BaseException:
            await self.__aexit__()
            raise
        logger.info("%s on %s", self._name, self.url)
        return self

    def stop(self) -> None:
        """Ask the server to finish the requests in flight and stop."""
        if self._server is not None:
            self._server.should_exit = True

    async def wait(self) -> None:
        """Until the server stops (after :meth:`stop`)."""
        if self._task is not None:
            await self._task

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._task is not None:
                self.stop()
                await self._task
        finally:
            self._task = None
            if self._socket is not None:
                self._socket.close()
                self._socket = None
