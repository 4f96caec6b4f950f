"""A TCP relay in front of a server, where connection faults are injected.

The OPC UA server listens on a private port; clients reach it through this relay on the
advertised one. Dropping connections, stopping to answer, delaying answers and going away for a
while then need nothing from the server library's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

logger = logging.getLogger(__name__)

_CHUNK = 65536


class Relay:
    """Forwards ``host:port`` to ``target``; ``hang`` discards answers, ``latency`` delays them."""

    def __init__(self, name: str, host: str, port: int, target: tuple[str, int]) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.target = target
        self.hang = False
        self.latency = 0.0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
            self._restarting = None
        await self._close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop()
            await self._server.wait_closed()
            self._server = None
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._server is not None

    def drop(self) -> int:
        """Close every relayed connection now; return how many."""
        pairs = list(self._pairs)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        self._pairs.clear()
        return len(pairs)

    def restart(self, downtime: float) -> None:
        """Go away (refusing connections) for ``downtime`` seconds, then listen again."""
        if self._restarting is not None and not self._restarting.done():
            return
        self._restarting = asyncio.get_running_loop().create_task(self._restart(downtime))

    async def _restart(self, downtime: float) -> None:
        await self._close()
        logger.info("%s: down for %.1f s", self.name, downtime)
        await asyncio.sleep(downtime)
        await self.start()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for coro in (
            self._pump(reader, up_writer, pair, answers=False),
            self._pump(up_reader, writer, pair, answers=True),
        ):
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        *,
        answers: bool,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if answers:
                    if self.hang:
                        continue
                    if self.latency > 0:
                        await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._pairs.discard(pair)
            for side in pair:
                side.transport.abort()
