"""A running identifier node: the registry (migrated) and the HTTP service on a bound socket."""

from __future__ import annotations

import logging

from common import HttpServer
from identifiers._config import NodeConfig
from identifiers._service import create_app
from identifiers._store import Registry

logger = logging.getLogger(__name__)


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
        self._server: HttpServer | None = None
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
        app = create_app(self.config, self._registry)
        self._server = HttpServer(app, listen.host, listen.port, name="identifier node")
        await self._server.__aenter__()
        self.url = self._server.url
        logger.info(
            "identifier node serving %s on %s", ", ".join(self.config.authoritative), self.url
        )

    async def wait(self) -> None:
        """Serve until the server is told to exit (a signal, or :meth:`stop`)."""
        if self._server is not None:
            await self._server.wait()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._server is not None:
                await self._server.__aexit__()
        finally:
            self._server = None
            await self._registry.__aexit__(None, None, None)
