"""The client every other package uses: resolve through a node, follow referrals, cache.

Caching follows the Handle system: an answer is kept for the shortest TTL among its values,
never longer than two days; "not found" is kept briefly so a flood of lookups for a missing
device does not hammer the node. When the node (or the node a referral points to) is down,
an expired answer is served with a warning rather than failing a running pipeline: a gateway's
key changes rarely, while an ingest that stops on a resolver outage loses data for certain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from identifiers._codec import parse, parse_prefix
from identifiers._config import covers
from identifiers._errors import (
    SERVICE_REFERRAL,
    SUCCESS,
    VALUES_NOT_FOUND,
    HandleError,
    HandleNotFound,
    NodeUnavailable,
    Referral,
    ReferralError,
    ServerError,
    error_for,
)
from identifiers._records import MAX_CACHE_TTL, HandleRecord, HandleValue

logger = logging.getLogger(__name__)

#: how long a referral (prefix → node) learnt from an answer is remembered
SITE_TTL = 3600.0
#: records per batch call, the limit of the node API
BATCH_LIMIT = 2000


def _referral_of(body: dict[str, Any]) -> Referral | None:
    """The node a 302 answer names, so a caller told to write elsewhere learns where."""
    referral = body.get("referral")
    if not isinstance(referral, dict):
        return None
    prefix, url = referral.get("prefix"), referral.get("url")
    if not isinstance(prefix, str) or not isinstance(url, str):
        return None
    return Referral(prefix, url)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    negative_hits: int = 0
    stale: int = 0
    referrals: int = 0
    #: callers that joined a request already under way for the same handle
    coalesced: int = 0


@dataclass
class _Entry:
    record: HandleRecord | None
    error: HandleError | None
    expires: float


class Client:
    """Async context manager talking to one home node (``url``).

    ``token`` authorises writes and reading admin values; it is sent to the home node only,
    never to a node a referral points to. ``clock`` is injectable so tests and simulations can
    move time instead of sleeping.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cache: bool = True,
        max_ttl: int = MAX_CACHE_TTL,
        negative_ttl: float = 30.0,
        max_stale: float = 7 * 86400.0,
        max_entries: int = 100_000,
        max_referrals: int = 5,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._cache_on = cache
        self._max_ttl = min(max_ttl, MAX_CACHE_TTL)
        self._negative_ttl = negative_ttl
        self._max_stale = max_stale
        self._max_entries = max_entries
        self._max_referrals = max_referrals
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._sites: dict[str, tuple[str, float]] = {}
        self._stale_warned: set[str] = set()
        self._inflight: dict[str, asyncio.Task[HandleRecord]] = {}
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self.stats = CacheStats()

    async def __aenter__(self) -> Client:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        pending = list(self._inflight.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._http.aclose()

    # --- resolution --------------------------------------------------------------------------

    async def resolve(
        self,
        handle: str,
        *,
        types: Iterable[str] = (),
        indexes: Iterable[int] = (),
        fresh: bool = False,
    ) -> HandleRecord:
        """The record of ``handle``, filtered like Handle.Net's ``type=``/``index=``.

        Raises :class:`HandleNotFound` and the other :class:`HandleError` kinds for what a node
        answered, :class:`NodeUnavailable` when no node answered and nothing is cached.
        ``fresh`` skips the cache (but still falls back to a stale answer on an outage).
        """
        ident = parse(handle)
        name = str(ident)
        entry = self._cache.get(name) if self._cache_on else None
        if entry is not None and not fresh and self._clock() < entry.expires:
            self._cache.move_to_end(name)
            if entry.record is None:
                self.stats.negative_hits += 1
                message = entry.error.message if entry.error else "handle not found"
                raise HandleNotFound(name, message)
            self.stats.hits += 1
            return entry.record.filtered(types, indexes)
        # one request per handle however many callers miss at once (an ingest that starts
        # with a backlog asks for the same gateway key thousands of times in a moment)
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._refresh(name, ident.prefix, entry))
            self._inflight[name] = task
            task.add_done_callback(lambda done: self._settle(name, done))
        else:
            self.stats.coalesced += 1
        record = await asyncio.shield(task)
        return record.filtered(types, indexes)

    def _settle(self, name: str, task: asyncio.Task[HandleRecord]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every caller was cancelled

    async def _refresh(self, name: str, prefix: str, entry: _Entry | None) -> HandleRecord:
        now = self._clock()
        self.stats.misses += 1
        try:
            record = await self._fetch(name, prefix)
        except HandleNotFound as exc:
            self._store(name, _Entry(None, exc, now + self._negative_ttl))
            raise
        except NodeUnavailable as exc:
            if entry is None or entry.record is None or now - entry.expires > self._max_stale:
                raise
            self.stats.stale += 1
            if name not in self._stale_warned:
                self._stale_warned.add(name)
                logger.warning(
                    "serving stale record of %s (expired %.0f s ago): %s",
                    name,
                    now - entry.expires,
                    exc.reason,
                )
            return entry.record
        if name in self._stale_warned:
            self._stale_warned.discard(name)
            logger.info("record of %s fresh again from its node", name)
        self._store(name, _Entry(record, None, now + record.ttl(self._max_ttl)))
        return record

    def _store(self, name: str, entry: _Entry) -> None:
        if not self._cache_on:
            return
        self._cache[name] = entry
        self._cache.move_to_end(name)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def forget(self, handle: str) -> None:
        """Drop a cached answer, e.g. after a signature failed with the cached key."""
        self._cache.pop(str(parse(handle)), None)

    def _site_for(self, prefix: str, now: float) -> str | None:
        best: tuple[int, str] | None = None
        for site_prefix, (url, expires) in list(self._sites.items()):
            if expires <= now:
                del self._sites[site_prefix]
            elif (prefix == site_prefix or prefix.startswith(site_prefix + ".")) and (
                best is None or len(site_prefix) > best[0]
            ):
                best = (len(site_prefix), url)
        return best[1] if best else None

    async def _fetch(self, name: str, prefix: str) -> HandleRecord:
        url = self._site_for(prefix, self._clock()) or self.url
        visited: list[str] = []
        path = "/api/handles/" + quote(name, safe="/")
        for _ in range(self._max_referrals + 1):
            visited.append(url)
            body = await self._get(name, url, path)
            code = body.get("responseCode")
            if code in (SUCCESS, VALUES_NOT_FOUND):
                try:
                    return HandleRecord(handle=body["handle"], values=body.get("values", []))
                except (KeyError, ValidationError) as exc:
                    raise ServerError(name, f"{url} answered a malformed record: {exc}") from None
            referral = body.get("referral")
            if code == SERVICE_REFERRAL and isinstance(referral, dict):
                target = str(referral.get("url", "")).rstrip("/")
                if not target.startswith(("http://", "https://")):
                    raise ReferralError(name, f"{url} referred to {target!r}, not an HTTP URL")
                if target in visited:
                    raise ReferralError(name, f"referrals loop: {' -> '.join([*visited, target])}")
                self.stats.referrals += 1
                # remembered only for a prefix that covers the handle's, so the answer about
                # one handle cannot steer later lookups under an unrelated prefix
                site_prefix = str(referral.get("prefix", prefix))
                if covers(site_prefix, prefix):
                    self._sites[site_prefix] = (target, self._clock() + SITE_TTL)
                url = target
                continue
            raise error_for(int(code), name, str(body.get("message", "")), _referral_of(body))
        raise ReferralError(name, f"more than {self._max_referrals} referrals: {visited}")

    async def _get(self, name: str, url: str, path: str) -> dict[str, Any]:
        headers = self._auth() if url == self.url else {}
        try:
            response = await self._http.get(url + path, headers=headers)
        except httpx.TransportError as exc:
            self._drop_site(url)
            raise NodeUnavailable(name, url, str(exc) or type(exc).__name__) from exc
        if response.status_code >= 500:
            self._drop_site(url)
            raise NodeUnavailable(name, url, f"HTTP {response.status_code}")
        return self._json(name, url, response)

    def _drop_site(self, url: str) -> None:
        for prefix, (site, _) in list(self._sites.items()):
            if site == url:
                del self._sites[prefix]

    @staticmethod
    def _json(name: str, url: str, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise NodeUnavailable(name, url, f"HTTP {response.status_code}, not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("responseCode"), int):
            raise NodeUnavailable(name, url, f"HTTP {response.status_code}, not a Handle answer")
        return body

    # --- calls to the home node only (writes, listing) ---------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def _call(
        self, method: str, path: str, name: str, *, json: Any = None, params: Any = None
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method, self.url + path, json=json, params=params, headers=self._auth()
            )
        except httpx.TransportError as exc:
            raise NodeUnavailable(name, self.url, str(exc) or type(exc).__name__) from exc
        body = self._json(name, self.url, response)
        if body["responseCode"] != SUCCESS:
            raise error_for(
                int(body["responseCode"]),
                str(body.get("handle") or name),
                str(body.get("message", "")),
                _referral_of(body),
            )
        return body

    async def put(
        self, handle: str, values: Sequence[HandleValue], *, overwrite: bool = True
    ) -> str:
        """Create or replace a record; returns ``created``, ``updated`` or ``unchanged``."""
        name = str(parse(handle))
        body = await self._call(
            "PUT",
            "/api/handles/" + quote(name, safe="/"),
            name,
            json={"values": [v.model_dump(mode="json") for v in values]},
            params={"overwrite": str(overwrite).lower()},
        )
        self._cache.pop(name, None)
        return str(body.get("status", ""))

    async def register(
        self, records: Sequence[tuple[str, Sequence[HandleValue]]], *, overwrite: bool = True
    ) -> list[tuple[str, str]]:
        """Write many records, :data:`BATCH_LIMIT` per call, each call one transaction.

        Returns ``(handle, status)`` per record. With ``overwrite`` a record that is already as
        given stays ``unchanged``, which makes registration from a config idempotent.
        """
        results: list[tuple[str, str]] = []
        for start in range(0, len(records), BATCH_LIMIT):
            chunk = records[start : start + BATCH_LIMIT]
            doc = {
                "overwrite": overwrite,
                "records": [
                    {"handle": h, "values": [v.model_dump(mode="json") for v in vals]}
                    for h, vals in chunk
                ],
            }
            body = await self._call("POST", "/api/batch", chunk[0][0], json=doc)
            for item in body["results"]:
                self._cache.pop(item["handle"], None)
                results.append((item["handle"], item["status"]))
        return results

    async def delete(self, handle: str, indexes: Sequence[int] = ()) -> None:
        name = str(parse(handle))
        params = [("index", str(i)) for i in indexes]
        await self._call("DELETE", "/api/handles/" + quote(name, safe="/"), name, params=params)
        self._cache.pop(name, None)

    async def list(self, prefix: str) -> list[str]:
        """Every handle under ``prefix`` (needs a token for it)."""
        normal = parse_prefix(prefix)
        handles: list[str] = []
        page = 0
        while True:
            body = await self._call(
                "GET", "/api/handles", normal, params={"prefix": normal, "page": page}
            )
            handles += body["handles"]
            if not body["handles"] or len(handles) >= int(body["totalCount"]):
                return handles
            page += 1
