"""A running evidence service: a read-only pool on the ingest store, a client of the identifier
node, and the API and web page on a bound socket.

psycopg calls block, so every store query runs in a worker thread with a connection of its own
from the pool; the event loop only routes requests. Every connection is read-only at the
server (``default_transaction_read_only``), so the service cannot change the evidence it
shows, whatever a bug in it would try.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as wire
import identifiers
from common import HttpServer, load_or_create_key
from evidence._access import Tokens
from evidence._api import create_app
from evidence._config import EvidenceConfig
from evidence._errors import RegistryError, StoreUnavailable
from evidence._mapping import Assessment, assess, load_indicators
from evidence._metrics import collect
from evidence._models import FirmEvidence, Params, Window
from evidence._registry import RegisteredDevice, registered_devices
from evidence._report import Report, build_report

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: how long a request waits for a free store connection before answering 503
_POOL_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Records:
    """A firm's device records, and when they were read from the identifier node."""

    devices: list[RegisteredDevice]
    read: dt.datetime


class Service:
    """Async context manager; ``url`` is known once entered, even for port 0."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.tokens = Tokens(config.tokens)
        self.indicators = load_indicators()
        self.params = Params(
            fresh_within=config.metrics.fresh_within, outage_after=config.metrics.outage_after
        )
        self._pool = psycopg_pool.ConnectionPool(
            config.database.dsn,
            min_size=1,
            max_size=config.database.pool_max,
            kwargs={"autocommit": True, "options": "-c default_transaction_read_only=on"},
            open=False,
            name="evidence-store",
        )
        self._client: identifiers.Client | None = None
        self._registered: dict[str, tuple[float, Records]] = {}
        #: firms whose records could not be read again: logged once, until they can
        self._stale: set[str] = set()
        self._server: HttpServer | None = None
        self.url = ""
        #: the platform's signing key and its fingerprint, when ``report_key`` is configured
        self.report_key: Ed25519PrivateKey | None = None
        self.report_fingerprint = ""

    async def __aenter__(self) -> Service:
        token = self.config.identifiers.token_file.read_text(encoding="utf-8").strip()
        if self.config.report_key is not None:
            self.report_key, made = load_or_create_key(self.config.report_key)
            public = wire.public_key_bytes(self.report_key)
            self.report_fingerprint = wire.fingerprint(public)
            if made:
                logger.warning(
                    "made the platform's report key %s (%s): publish its fingerprint",
                    self.config.report_key,
                    self.report_fingerprint,
                )
        try:
            # the store may be away at start: requests answer 503 until it is back
            await asyncio.to_thread(self._pool.open, wait=False)
            self._client = identifiers.Client(str(self.config.identifiers.node), token=token)
            await self._client.__aenter__()
            host, port = self.config.address
            self._server = HttpServer(create_app(self), host, port, name="evidence")
            await self._server.__aenter__()
        except BaseException:
            await self.__aexit__()
            raise
        self.url = self._server.url
        logger.info("evidence service on %s, %d tokens", self.url, len(self.config.tokens))
        return self

    async def wait(self) -> None:
        """Serve until :meth:`stop` (or a signal handler calling it)."""
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
            if self._client is not None:
                await self._client.__aexit__()
                self._client = None
            await asyncio.to_thread(self._pool.close)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            with self._pool.connection(timeout=_POOL_WAIT) as conn:
                return fn(conn, *args, **kwargs)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreUnavailable(f"the ingest store cannot be read: {exc}") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise StoreUnavailable(f"no ingest schema in the store: {exc}") from exc

    async def query(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in a worker thread with a pooled, read-only
        connection."""
        return await asyncio.to_thread(self._run, fn, args, kwargs)

    async def registered(self, firm: str) -> Records:
        """The firm's device records, read again once ``cache_seconds`` old.

        While the identifier node cannot answer, the records read last are used (their
        ``read`` time tells); a firm never read before is a :class:`RegistryError`.
        """
        if self._client is None:
            raise RuntimeError("the evidence service is not running")
        now = time.monotonic()
        cached = self._registered.get(firm)
        if cached is not None and now - cached[0] < self.config.identifiers.cache_seconds:
            return cached[1]
        try:
            found = Records(await registered_devices(self._client, firm), dt.datetime.now(dt.UTC))
        except RegistryError as exc:
            if cached is None:
                raise
            if firm not in self._stale:
                self._stale.add(firm)
                logger.warning("%s; using its device records read at %s", exc, cached[1].read)
            return cached[1]
        if firm in self._stale:
            self._stale.discard(firm)
            logger.info("device records of %s read again", firm)
        self._registered[firm] = (now, found)
        return found

    async def evidence(
        self, firm: str, window: Window
    ) -> tuple[FirmEvidence, Assessment, dt.datetime]:
        """The firm's metrics in ``window``, the indicator items they support, and when the
        device records behind them were read."""
        records = await self.registered(firm)
        ev = await self.query(collect, firm, window, records.devices, params=self.params)
        return ev, assess(ev, self.indicators), records.read

    async def report(self, firm: str, window: Window) -> Report:
        """The firm's signed evidence report for ``window`` (``build_report``); the caller
        checked that ``report_key`` is configured."""
        if self.report_key is None:
            raise RuntimeError("no report key is configured")
        records = await self.registered(firm)
        return await self.query(
            build_report, firm, window, records.devices, self.report_key, params=self.params
        )
