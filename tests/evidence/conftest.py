"""One store, filled once per module through the real path, for two firms that differ only by
the faults put into one of them.

Both firms have the same plant: two gateways, five registered devices, 180 s of 1 Hz data
sent in signed envelopes of 5 s each, through a private Mosquitto into a running ingest
(which verifies every envelope against the keys on a real identifier node). The healthy firm
``88.709.911`` gets everything; the faulty firm ``88.709.912`` gets the same, except:

- ``dev.press`` goes offline at t = 90 s;
- ``gw.line1``'s envelopes for t = 100..109 s (kiln and fan) are dropped from its outbox
  and declared lost;
- the kiln's envelope for t = 150..154 s never arrives, undeclared (a gap);
- gateway ``gw.line2`` (and its ``dev.meter``) falls silent after t = 60 s;
- ``dev.fan`` sends every sample with quality BAD;
- a forged envelope in the name of ``gw.line1`` is quarantined for its signature.

The tests then check every metric of the faulty firm against the healthy one, exactly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from _services import MosquittoBroker, PostgresServer, count, ingest_config, wait_until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import gateway.protocol as p
import identifiers
from ingest import Ingest

HEALTHY, FAULTY = "88.709.911", "88.709.912"
SECONDS, SLOT = 180, 5
#: device suffix → (gateway suffix, key equipment, stages, tags)
PLANT: dict[str, tuple[str, bool, tuple[str, ...], tuple[str, ...]]] = {
    "dev.kiln": ("gw.line1", True, ("设备管理", "能耗管理"), ("power", "temp")),
    "dev.press": ("gw.line1", True, ("设备管理", "质量管理"), ("force",)),
    "dev.fan": ("gw.line1", False, ("安全生产",), ("rpm",)),
    "dev.spare": ("gw.line1", True, ("生产管控",), ("x",)),  # registered, never sends
    "dev.meter": ("gw.line2", True, ("能耗管理",), ("kwh",)),
}


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


class Chain:
    """A gateway's envelopes, numbered, chained and signed, with chosen creation times."""

    def __init__(self, gateway: str, key: Ed25519PrivateKey | None = None) -> None:
        self.gateway = gateway
        self.key = key or Ed25519PrivateKey.generate()
        self.seq = 0
        self.prev = p.GENESIS

    def _next(self, created: int, **fields: Any) -> tuple[str, bytes]:
        env = p.Envelope(self.gateway, self.seq + 1, self.prev, created, **fields)
        self.seq, self.prev = env.seq, env.digest
        signed = p.sign(env, self.key)
        return p.envelope_topic(env), p.encode_json(signed)

    def data(self, created: int, device: str, samples: list[p.Sample]) -> tuple[str, bytes]:
        return self._next(created, device=device, samples=tuple(samples))

    def loss(self, created: int, first: int, last: int, samples: int) -> tuple[str, bytes]:
        return self._next(created, loss=p.Loss(first, last, samples, "outbox full"))


@dataclass
class Plant:
    """What the module's tests get: the store and the facts of the scenario."""

    dsn: str
    start: dt.datetime
    registered: dict[str, list[evidence.RegisteredDevice]]
    #: wall-clock time just before the first message was published and after the last commit
    sent_after: dt.datetime
    stored_before: dt.datetime
    expected: dict[str, Any] = field(default_factory=dict)

    def at(self, seconds: float) -> dt.datetime:
        return self.start + dt.timedelta(seconds=seconds)

    def window(self, begin: float = 0, end: float = SECONDS) -> evidence.Window:
        return evidence.Window(self.at(begin), self.at(end))

    def collect(self, firm: str, window: evidence.Window | None = None, **kw: Any) -> Any:
        window = window or self.window()
        kw.setdefault("as_of", window.end)
        kw.setdefault("params", evidence.Params(fresh_within=60, outage_after=30))
        with psycopg.connect(self.dsn) as conn:
            return evidence.collect(conn, f"{firm}/firm", window, self.registered[firm], **kw)

    def fetch(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(query, params or None).fetchall()


def messages(firm: str, start: dt.datetime, chains: dict[str, Chain]) -> list[tuple[str, bytes]]:
    """The plant's envelopes in the order its gateways make them, faults for FAULTY."""
    faulty = firm == FAULTY
    out = []
    dropped: list[tuple[int, int]] = []
    for slot in range(SECONDS // SLOT):
        t0 = slot * SLOT
        if dropped and t0 == 110:  # the gateway declares what its outbox dropped
            line1 = chains["gw.line1"]
            lost = sum(n for _, n in dropped)
            out.append(line1.loss(us(start) + t0 * 1_000_000, dropped[0][0], dropped[-1][0], lost))
            dropped = []
        for i, (device, (gw, _key, _stages, tags)) in enumerate(PLANT.items()):
            if device == "dev.spare":
                continue
            if faulty and device == "dev.press" and t0 >= 90:
                continue
            if faulty and gw == "gw.line2" and t0 >= 60:
                continue
            chain = chains[gw]
            created = us(start) + (t0 + SLOT - 1) * 1_000_000 + 500_000 + i * 1000
            quality = p.Quality.BAD if faulty and device == "dev.fan" else p.Quality.GOOD
            samples = [
                p.Sample(tag, us(start) + t * 1_000_000, float(t), quality)
                for t in range(t0, t0 + SLOT)
                for tag in tags
            ]
            if faulty and gw == "gw.line1" and t0 in (100, 105):
                chain.seq += 1  # made and signed, then dropped from a full outbox
                dropped.append((chain.seq, len(samples)))
                continue
            if faulty and device == "dev.kiln" and t0 == 150:
                chain.seq += 1  # lost on the way, and nobody said so
                continue
            out.append(chain.data(created, f"{firm}/{device}", samples))
    return out


def forged(firm: str, start: dt.datetime) -> tuple[str, bytes]:
    impostor = Chain(f"{firm}/gw.line1")  # a key the registry does not know
    return impostor.data(us(start), f"{firm}/dev.kiln", [p.Sample("temp", us(start), 1.0)])


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish_all(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def deliver(
    dsn: str,
    tmp: Path,
    chain: Chain,
    devices: dict[str, identifiers.DeviceRecord],
    sent: list[tuple[str, bytes]],
) -> list[evidence.RegisteredDevice]:
    """Register ``chain``'s gateway and ``devices`` (handle → record) on an identifier node over
    ``dsn``, publish ``sent`` through a private Mosquitto to an ingest writing to ``dsn``, wait
    until every message has its receipt; the firm's devices as the registry reads them."""
    firm = next(iter(devices.values())).enterprise
    node_config = identifiers.NodeConfig.model_validate(
        {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
         "database": {"dsn": dsn, "pool_max": 2}, "authoritative": ["88.709"]}
    )  # fmt: skip
    with MosquittoBroker() as broker:
        async with identifiers.Node(node_config) as node:
            _, token = await node.registry.create_token("88.709", days=1, label="evidence tests")
            gateway = identifiers.GatewayRecord(
                enterprise=firm, public_key=p.public_key_bytes(chain.key)
            )
            async with identifiers.Client(node.url, token=token) as client:
                await client.register(
                    [(chain.gateway, gateway.to_values())]
                    + [(h, r.to_values()) for h, r in devices.items()]
                )
                registered = await evidence.registered_devices(client, firm)
            config = ingest_config(dsn, broker.port, node.url, tmp, health=None)
            async with Ingest(config) as ingest:
                await wait_until(lambda: ingest.consumer.stats.subscribed)
                publisher = Publisher(broker.port)
                try:
                    await asyncio.to_thread(publisher.publish_all, sent)
                    await wait_until(lambda: count(dsn, "receipt") == len(sent))
                finally:
                    publisher.close()
    return registered


async def fill(dsn: str, broker: MosquittoBroker, tmp: Path, start: dt.datetime) -> Plant:
    node_config = identifiers.NodeConfig.model_validate(
        {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
         "database": {"dsn": dsn, "pool_max": 2}, "authoritative": ["88.709"]}
    )  # fmt: skip
    async with identifiers.Node(node_config) as node:
        _, token = await node.registry.create_token("88.709", days=1, label="evidence tests")
        config = ingest_config(dsn, broker.port, node.url, tmp, health=None)
        async with identifiers.Client(node.url, token=token) as client:
            chains: dict[str, dict[str, Chain]] = {}
            for firm in (HEALTHY, FAULTY):
                chains[firm] = {gw: Chain(f"{firm}/{gw}") for gw in ("gw.line1", "gw.line2")}
                enterprise = f"{firm}/firm"
                records = [
                    (c.gateway, identifiers.GatewayRecord(
                        enterprise=enterprise, public_key=p.public_key_bytes(c.key)).to_values())
                    for c in chains[firm].values()
                ]  # fmt: skip
                records += [
                    (f"{firm}/{dev}", identifiers.DeviceRecord(
                        enterprise=enterprise, gateway=f"{firm}/{gw}", key_equipment=key,
                        stages=stages, name=dev).to_values())
                    for dev, (gw, key, stages, _tags) in PLANT.items()
                ]  # fmt: skip
                await client.register(records)
            sent = [
                msg for firm in (HEALTHY, FAULTY) for msg in messages(firm, start, chains[firm])
            ]
            sent.append(forged(FAULTY, start))
            receipts = len(sent) - 1
            async with Ingest(config) as ingest:
                await wait_until(lambda: ingest.consumer.stats.subscribed)
                publisher = Publisher(broker.port)
                sent_after = dt.datetime.now(dt.UTC)
                try:
                    await asyncio.to_thread(publisher.publish_all, sent)
                    await wait_until(lambda: count(dsn, "receipt") == receipts)
                    await wait_until(lambda: count(dsn, "quarantine") == 1)
                    await wait_until(lambda: ingest.consumer.stats.acked == len(sent))
                finally:
                    publisher.close()
                stored_before = dt.datetime.now(dt.UTC)
            registered = {
                firm: await evidence.registered_devices(client, f"{firm}/firm")
                for firm in (HEALTHY, FAULTY)
            }
    return Plant(dsn, start, registered, sent_after, stored_before)


@pytest.fixture(scope="module")
def plant(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    # whole minutes, in the past: the window's counts come from the rollup, and every
    # envelope was created before ingest received it
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    start = now - dt.timedelta(minutes=5)
    with pg_server.database() as dsn, MosquittoBroker() as broker:
        yield asyncio.run(fill(dsn, broker, tmp_path_factory.mktemp("evidence"), start))


class Served:
    """An evidence service run in a thread of its own (its own event loop), with an identifier
    node on the same database, so that tests and a browser can talk to it synchronously.
    ``around(node_url, node_token)``, if given, is an async context manager entered before the
    service starts and left after it stops (e.g. a running pipeline that registers its
    records first)."""

    def __init__(
        self,
        dsn: str,
        tmp: Path,
        tokens: list[dict[str, Any]],
        *,
        metrics: dict[str, Any] | None = None,
        cache_seconds: float = 60,
        around: Callable[[str, str], contextlib.AbstractAsyncContextManager[Any]] | None = None,
        report_key: str | None = None,
    ) -> None:
        self.dsn, self.tmp, self.tokens = dsn, tmp, tokens
        self.report_key = report_key
        self.metrics = metrics or {}
        self.cache_seconds = cache_seconds
        self.node: identifiers.Node | None = None
        self.around = around
        self.url = ""
        self.service: evidence.Service | None = None
        self._ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="evidence-service", daemon=True)

    def __enter__(self) -> Served:
        self._thread.start()
        self.url = self._ready.result(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def call(self, work: Callable[[evidence.Service], Any]) -> Any:
        """``await work(service)`` in the service's loop; its result."""
        assert self._loop is not None
        assert self.service is not None
        return asyncio.run_coroutine_threadsafe(work(self.service), self._loop).result(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        node_config = identifiers.NodeConfig.model_validate(
            {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
             "database": {"dsn": self.dsn, "pool_max": 2}, "authoritative": ["88.709"]}
        )  # fmt: skip
        async with identifiers.Node(node_config) as node, contextlib.AsyncExitStack() as stack:
            self.node = node
            _, token = await node.registry.create_token("88.709", days=1, label="evidence")
            (self.tmp / "node.token").write_text(token + "\n", encoding="utf-8")
            config = evidence.EvidenceConfig.model_validate(
                {"kind": "evidence", "listen": "127.0.0.1:0",
                 "database": {"dsn": self.dsn, "pool_max": 3},
                 "identifiers": {"node": node.url, "token_file": "node.token",
                                 "cache_seconds": self.cache_seconds},
                 "metrics": self.metrics, "tokens": self.tokens,
                 "report_key": self.report_key},
                context={"base_dir": self.tmp},
            )  # fmt: skip
            if self.around is not None:
                await stack.enter_async_context(self.around(node.url, token))
            self.service = await stack.enter_async_context(evidence.Service(config))
            self._ready.set_result(self.service.url)
            await self._stop.wait()


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """What test modules need of this file (they cannot import a conftest)."""
    return SimpleNamespace(
        Served=Served, PLANT=PLANT, HEALTHY=HEALTHY, FAULTY=FAULTY, wait_until=wait_until,
        Chain=Chain, deliver=deliver,
    )  # fmt: skip
