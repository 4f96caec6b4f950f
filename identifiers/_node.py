"""A running identifier node: the registry (migrated) and the HTTP service on a bound socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from identifiers._config import NodeConfig
from identifiers._service import create_app
from identifiers._store import Registry

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling: a node is one component among others,
    so whoever runs the process decides what SIGINT/SIGTERM do (the CLI calls ``stop``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Node:
    """A running identifier node: registry (migrated) plus HTTP service on a bound socket.

    An async context manager; ``url`` is known once entered, even when the config asks for
    port 0. :meth:`stop` asks it to finish the requests in flight and stop.
    """

    def __init__(self, config: NodeConfig, *, migrate: bool = True) -> None:
        self.config = config
        self._migrate = migrate
        self._registry = Registry(
            config.database.dsn,
            min_size=config.database.pool_min,
            max_size=config.database.pool_max,
        )
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    @property
    def registry(self) -> Registry:
        return self._registry

    async def __aenter__(self) -> Node:
        await self._registry.__aenter__()
        try:
            if self._migrate:
                await self._registry.migrate()
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        listen = self.config.listen
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and a socket made with proto 0 answers every request ~40 ms late (Nagle meets
        # delayed ACK), measured here.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        host, port = sock.getsockname()[:2]
        self.url = (
            f"http://[{host}]:{port}" if family == socket.AF_INET6 else f"http://{host}:{port}"
        )
        app = create_app(self.config, self._registry)
        config = uvicorn.Config(
            app, lifespan="off", ws="none", log_config=None, access_log=False,
            timeout_graceful_shutdown=5, server_header=False,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="identifiers-http"
        )
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError(f"identifier node on {self.url} stopped while starting")
            await asyncio.sleep(0.01)
        logger.info(
            "identifier node serving %s on %s", ", ".join(self.config.authoritative), self.url
        )

    async def wait(self) -> None:
        """Serve until the server is told to exit (a signal, or :meth:`stop`)."""
        if self._task is not None:
            await self._task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

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
            await self._registry.__aexit__(None, None, None)
