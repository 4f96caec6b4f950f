"""The fault suite's harness: the real pipeline as processes, and an exact reconciliation.

:class:`Plant` runs PLC simulators (``guantong sim run``, the deterministic simulator with its
fault interface), a gateway (``guantong gateway run``), a private Mosquitto, ingest
(``guantong ingest run``) and a PostgreSQL database, each process of its own so that SIGKILL
is real. The gateway polls every tag of the simulated factory at a fixed interval, so the load
is fixed: tags ÷ interval samples per second.

:func:`reconcile` ends a scenario. Its *expected* count is the gateway's own durable record:
the samples it committed to its outbox, counted per series and second in the same SQLite
transaction as the envelopes (``gateway._attest``). The counts of periods that are over
arrive at ingest inside signed checkpoints (``checkpoint_count``); those of the last periods
are still in the outbox file, read after the gateway stopped. Nothing the gateway committed
escapes that record, whatever killed it; a sample polled but not yet committed when the
gateway is SIGKILLed is in no record (it was never durable) and the gap it leaves is in
source time, not in the chain.

Then, from the store:

- *stored*: sample rows of the gateway's devices;
- *duplicates*: rows delivered twice under different envelopes (the sum of the receipts'
  sample counts less the rows: the primary key absorbs such a copy, the receipts show it)
  plus rows beyond what the gateway attested for their series and second;
- *declared losses*: samples of the gateway's signed loss envelopes (``connectivity_event``
  of kind ``loss``);
- the chain: every sequence number from 1 to the outbox's head has a receipt or lies in a
  declared loss range. Both at once is no error: the outbox dropped an envelope it had
  already sent over a connection that died before the PUBACK, and the gateway cannot know
  that it arrived. Such an envelope counts as stored, its samples leave *declared losses*,
  and the notes say by how much the declaration overstates the loss.

PASS when expected = stored + declared losses, per series and second as in total, with no
duplicate, no hole in the chain, nothing left undelivered in the outbox and nothing
quarantined; FAIL with the reasons otherwise. A scenario whose fault is known to destroy
envelopes (``loss_cause``, e.g. a broker without durable storage) gets LOSS RECORDED instead
of FAIL when every missing envelope is named by a gap event ingest recorded and nothing else
is wrong: something was lost, and the store shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from _services import MosquittoBroker, free_port, kiln_works

import simulators
from edge import Batch, Quality, Sample
from gateway._keys import create_key
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config as sim_gateway_config

#: the ingest tests' ``register`` fixture: ``await register(chain, devices)``
Register = Callable[..., Awaitable[None]]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class Outcome:
    """One row of the fault table."""

    scenario: str
    expected: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    reasons: list[str] = field(default_factory=list)
    #: what the scenario itself observed (reconnects, gaps, …), for the reader of the table
    notes: list[str] = field(default_factory=list)
    #: sequence numbers with neither a receipt nor a declared loss, and those of them that no
    #: gap event of ingest names (a loss nobody would see)
    missing: list[int] = field(default_factory=list)
    unseen: list[int] = field(default_factory=list)
    #: what the scenario's fault destroys by design (``reconcile(loss_cause=…)``): envelopes
    #: missing for it, each shown by a gap event, make the verdict LOSS RECORDED, not FAIL
    loss_cause: str = ""

    @property
    def passed(self) -> bool:
        """No FAIL: nothing lost, or (LOSS RECORDED) lost only as the scenario expects, seen."""
        return not self.reasons

    @property
    def verdict(self) -> str:
        if not self.passed:
            return "FAIL: " + "; ".join(self.reasons)
        if self.missing:
            return (
                f"LOSS RECORDED: {len(self.missing)} envelopes ({self.loss_cause}), "
                "all shown as gaps"
            )
        return "PASS"


class Proc:
    """One product process (``python -m guantong …``), its output in a log file."""

    def __init__(self, name: str, argv: list[str], directory: Path) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "guantong", *argv]
        self.log = directory / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> int:
        """SIGKILL, as a crash or power cut; returns the exit status (-9)."""
        proc = self.popen
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        return proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status."""
        proc = self.popen
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return -signal.SIGKILL
        return proc.returncode

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


class Link:
    """A TCP path from the gateway to the broker that a test can cut and mend: the test's
    own forwarder on 127.0.0.1 (real sockets both ways). ``cut()`` closes every connection
    through it and refuses new ones, as an uplink outage does; ``mend()`` listens again on
    the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self.cuts += 1

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def close(self) -> None:
        await self.cut()


def _get(url: str) -> Any:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


async def wait_for(check: Callable[[], Any], within: float, what: str) -> Any:
    """Poll ``check`` in a thread until it is truthy; TimeoutError naming ``what``."""
    try:
        async with asyncio.timeout(within):
            while True:
                value = await asyncio.to_thread(check)
                if value:
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(f"not {what} within {within:.0f} s") from None


def fetch(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type]


class Plant:
    """The pipeline of one scenario; ``async with`` starts it all and stops it all.

    ``interval`` is the poll interval of every tag group; ``broker`` a Mosquitto of the
    scenario's own (started here when not given); ``dsn`` the store's database, with the
    identifier node's records (``register``) at ``node_url``; ``uplink_url`` the broker
    address the gateway uses when not the broker's own (a listener of its own, to cut).
    """

    def __init__(
        self,
        directory: Path,
        *,
        dsn: str,
        node_url: str,
        register: Register,
        broker: MosquittoBroker | None = None,
        interval: str = "200ms",
        outbox_max_bytes: int | None = None,
        outbox_dir: Path | None = None,
        fed: tuple[int, int] | None = None,
        via_link: bool = False,
        kafka: str | None = None,
        uplink_url: str | None = None,
    ) -> None:
        self.dir = directory
        self.dsn = dsn
        self.node_url = node_url
        self.register = register
        self.own_broker = broker is None
        self.broker = broker or MosquittoBroker()
        self.interval = interval
        self.outbox_path = (outbox_dir or directory) / "outbox.db"
        #: (devices, tags): no simulator and no gateway process; the test runs ``Gateway``
        #: in-process (``self.config``) and feeds it batches, so time can be compressed
        self.fed = fed
        self.link: Link | None = None
        self.via_link = via_link
        #: the broker URL the gateway uses when not the broker's own (a second listener)
        self.uplink_url = uplink_url
        self.config: GatewayConfig | None = None
        #: a Kafka bootstrap: ingest as ``ingest bridge`` + ``ingest sink`` instead of ``run``
        self.kafka = kafka
        #: the topic of the bridge and the sink, named when the configs are written
        self.kafka_topic = ""
        self.sink_health = free_port()
        # -v: the Kafka client's group and partition changes are what a reader of the log needs
        self.bridge = Proc("bridge", ["-v", "ingest", "bridge", "-c",
                                      str(directory / "bridge.yaml")], directory)  # fmt: skip
        self.sink = Proc("sink", ["-v", "ingest", "sink", "-c", str(directory / "sink.yaml")],
                         directory)  # fmt: skip
        self.outbox_max_bytes = outbox_max_bytes
        self.sim_port, self.control_port = free_port(), free_port()
        self.gw_health, self.ingest_health = free_port(), free_port()
        self.sim = Proc("sim", ["sim", "run", "-c", str(directory / "factory.yaml")], directory)
        self.gateway = Proc(
            "gateway",
            ["gateway", "run", "-c", str(directory / "gateway.yaml"), "--drain-timeout", "30"],
            directory,
        )
        self.ingest = Proc("ingest", ["ingest", "run", "-c", str(directory / "ingest.yaml")],
                           directory)  # fmt: skip
        self.gateway_id = ""
        self.devices: list[str] = []
        self.factory: simulators.FactoryConfig | None = None
        self.book: OutboxBook | None = None

    # -- configuration ------------------------------------------------------------------------

    async def _write_configs(self, chain_type: Any) -> None:
        doc = kiln_works(self.sim_port)
        doc["control"] = {"host": "127.0.0.1", "port": self.control_port}
        factory_file = self.dir / "factory.yaml"
        factory_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.factory = simulators.load_factory(factory_file)
        gw = sim_gateway_config(self.factory, base_dir=self.dir)
        if self.fed is not None:
            gw["devices"] = fed_devices(self.factory.firm.prefix, *self.fed)
        for device in gw["devices"]:
            # short timeouts: a hung PLC is noticed within a poll or two
            device["connection"].update({"timeout": 0.5, "retries": 0, "backoff_max": 1.0})
            for group in device["groups"]:
                group["interval"] = self.interval
        broker_url = self.uplink_url or self.broker.url
        if self.via_link:
            self.link = Link(self.broker.port)
            await self.link.mend()
            broker_url = f"mqtt://127.0.0.1:{self.link.port}"
        gw["uplink"] = {"broker": broker_url, "keepalive": 2, "checkpoint_interval": "1s"}
        gw["envelope"] = {"max_samples": 200 if self.fed is None else 1000, "max_delay": "100ms"}
        gw["health"] = {"listen": f"127.0.0.1:{self.gw_health}"}
        gw["outbox"] = {"path": str(self.outbox_path)}
        if self.outbox_max_bytes is not None:
            gw["outbox"]["max_bytes"] = self.outbox_max_bytes
        config = self.config = GatewayConfig.model_validate(gw, context={"base_dir": self.dir})
        (self.dir / "gateway.yaml").write_text(yaml.safe_dump(gw), encoding="utf-8")
        self.gateway_id = config.gateway.id
        self.devices = [d.id for d in config.devices]
        key = create_key(config.gateway.key_file)
        await self.register(chain_type(self.gateway_id, key), self.devices)
        ingest = {
            "kind": "ingest",
            "database": {"dsn": self.dsn, "partitions_ahead": 1},
            "identifiers": {"node": self.node_url},
            "mqtt": {"broker": self.broker.url, "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
                     "keepalive": 2},
            "batch": {"max_delay": "50ms", "decode_workers": 0},
            "health": {"listen": f"127.0.0.1:{self.ingest_health}"},
        }  # fmt: skip
        (self.dir / "ingest.yaml").write_text(yaml.safe_dump(ingest), encoding="utf-8")
        if self.kafka is not None:
            tag = uuid.uuid4().hex[:8]
            self.kafka_topic = f"envelopes-{tag}"
            bridge = {
                "kind": "ingest-bridge",
                "mqtt": {"broker": self.broker.url, "client_id": f"bridge-{tag}",
                         "share_group": "bridges", "keepalive": 2},
                "kafka": {"brokers": [self.kafka], "topic": self.kafka_topic,
                          "idempotent": False},  # Tansu 0.6 has no idempotent producer
                "health": {"listen": f"127.0.0.1:{self.ingest_health}"},
            }  # fmt: skip
            sink = {
                "kind": "ingest-sink",
                "database": {"dsn": self.dsn, "partitions_ahead": 1},
                "identifiers": {"node": self.node_url},
                "kafka": {"brokers": [self.kafka], "topic": self.kafka_topic,
                          "group": f"sinks-{tag}", "client_id": f"sink-{tag}",
                          "session_timeout": "6s", "rebalance_timeout": "20s"},
                "batch": {"max_delay": "50ms", "decode_workers": 0},
                "health": {"listen": f"127.0.0.1:{self.sink_health}"},
            }  # fmt: skip
            (self.dir / "bridge.yaml").write_text(yaml.safe_dump(bridge), encoding="utf-8")
            (self.dir / "sink.yaml").write_text(yaml.safe_dump(sink), encoding="utf-8")
            self.ingest = self.bridge  # what subscribes to MQTT

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, chain_type: Any) -> None:
        if self.own_broker:
            await asyncio.to_thread(self.broker.start)
        await self._write_configs(chain_type)
        self.ingest.start()
        if self.kafka is not None:
            self.sink.start()
            await self.sink_up()
        if self.fed is None:
            self.sim.start()
            await wait_for(lambda: _get(self.control("/machines")), 30, "simulator serving")
        await self.ingest_subscribed()
        if self.fed is None:
            self.gateway.start()
            await self.gateway_up()

    async def sink_up(self, within: float = 60) -> None:
        url = f"http://127.0.0.1:{self.sink_health}/healthz"
        await wait_for(lambda: _get(url), within, "sink healthy")

    def control(self, path: str) -> str:
        return f"http://127.0.0.1:{self.control_port}{path}"

    async def ingest_subscribed(self, within: float = 60) -> None:
        url = f"http://127.0.0.1:{self.ingest_health}/healthz"

        def check() -> bool:
            body = _get(url)
            return bool(body and body.get("mqtt", {}).get("subscribed"))

        await wait_for(check, within, "ingest subscribed")

    async def gateway_up(self, within: float = 60) -> None:
        await wait_for(lambda: _get(self.gateway_health()), within, "gateway healthy")

    def gateway_health(self) -> str:
        return f"http://127.0.0.1:{self.gw_health}/healthz"

    def gateway_metric(self, name: str) -> float:
        """A counter of the running gateway's ``/metrics`` (since its last start)."""
        text = httpx.get(f"http://127.0.0.1:{self.gw_health}/metrics", timeout=2).text
        for line in text.splitlines():
            if line.startswith((f"guantong_gateway_{name} ", f"guantong_gateway_{name}_total ")):
                return float(line.split()[-1])
        raise KeyError(name)

    async def fault(self, target: str, kind: str, **params: Any) -> None:
        async with httpx.AsyncClient() as client:
            r = await client.put(self.control(f"/faults/{target}/{kind}"), json=params)
            r.raise_for_status()

    async def clear_faults(self) -> None:
        async with httpx.AsyncClient() as client:
            (await client.delete(self.control("/faults"))).raise_for_status()

    async def receipts(self) -> int:
        rows = await asyncio.to_thread(fetch, self.dsn, "SELECT count(*) FROM receipt")
        return int(rows[0][0])

    async def grows(self, within: float = 30) -> None:
        """Wait until the store has taken at least one more envelope."""
        before = await self.receipts()
        await wait_for(lambda: fetch(self.dsn, "SELECT count(*) FROM receipt")[0][0] > before,
                       within, "receiving envelopes")  # fmt: skip

    async def kit_wait(self, check: Callable[[], Any], within: float = 1800) -> Any:
        """Wait for an in-process condition (checked on the event loop, not in a thread)."""
        async with asyncio.timeout(within):
            while not check():  # noqa: ASYNC110 - the writer's counters have no event
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for proc in dict.fromkeys([self.gateway, self.ingest, self.sink, self.bridge, self.sim]):
            await asyncio.to_thread(proc.stop, 30)
        if self.link is not None:
            await self.link.close()
        if self.own_broker:
            await asyncio.to_thread(self.broker.close)

    # -- the end of a scenario ----------------------------------------------------------------

    async def reconcile(
        self, scenario: str, *, within: float = 120, loss_cause: str = ""
    ) -> Outcome:
        """Stop the gateway cleanly (it commits what it read and delivers its outbox), wait
        for the store to take the whole chain, and count (``loss_cause``: see :class:`Outcome`)."""
        out = Outcome(scenario, loss_cause=loss_cause)
        await asyncio.to_thread(self.sim.stop, 30)  # nothing more to read: a fixed total
        code = await asyncio.to_thread(self.gateway.stop, 60)  # 0 at once when in-process
        if code != 0:
            out.reasons.append(f"gateway exited {code}: {self.gateway.tail(5)}")
        book = self.book = await asyncio.to_thread(read_outbox, self.outbox_path)
        if book.undelivered:
            out.reasons.append(f"{book.undelivered} envelopes never delivered")
        try:
            await wait_for(lambda: self._chain_done(book.head), within, "the whole chain stored")
        except TimeoutError as exc:
            out.notes.append(str(exc))
        await asyncio.to_thread(self._count, book, out)
        return out

    async def recount(self, scenario: str) -> Outcome:
        """Count again after :meth:`reconcile` (a control test changes the store between)."""
        assert self.book is not None
        out = Outcome(scenario)
        await asyncio.to_thread(self._count, self.book, out)
        return out

    def false_values(self) -> tuple[int, int]:
        """(Good samples checked, those whose value the simulator never served).

        Every value is a pure function of the factory's seed, the machine, the tag and the
        second (``simulators``); a Good sample stamped ``ts`` was read in one of the seconds
        just before, so its value must be the simulator's value of one of them.
        """
        assert self.factory is not None
        machines = {
            f"{self.factory.firm.prefix}/dev.{m.name}": simulators.Machine(
                m.name, m.profile, self.factory.seed, unit_id=m.unit_id or 0
            )
            for m in self.factory.machines()
        }
        cache: dict[tuple[str, int], dict[str, Any]] = {}

        def served(device: str, second: int) -> dict[str, Any]:
            if (device, second) not in cache:
                m = machines[device]
                raws = m.raw(m.profile.tags, second)
                cache[(device, second)] = {
                    spec.name: raws[spec.name] * spec.scale  # type: ignore[operator]
                    if spec.scale != 1.0 else raws[spec.name]
                    for spec in m.profile.tags
                }  # fmt: skip
            return cache[(device, second)]

        rows = fetch(
            self.dsn,
            "SELECT d.identifier, s.tag, extract(epoch FROM x.ts)::float8, x.value, x.text_value "
            "FROM sample x JOIN series s ON s.id = x.series_id "
            "JOIN device d ON d.id = s.device_id WHERE x.quality = 0",
        )
        false = 0
        for device, tag, ts, value, text in rows:
            got = text if text is not None else value
            if not any(
                _same(got, served(device, second).get(tag))
                for second in range(int(ts) - 3, int(ts) + 1)
            ):
                false += 1
        return len(rows), false

    def _gateway_pk(self) -> int | None:
        rows = fetch(self.dsn, "SELECT id FROM gateway WHERE identifier = %s", self.gateway_id)
        return rows[0][0] if rows else None

    def _chain_done(self, head: int) -> bool:
        gw = self._gateway_pk()
        if gw is None:
            return head == 0
        (covered,) = fetch(
            self.dsn,
            "SELECT (SELECT count(*) FROM receipt WHERE gateway_id = %s) + (SELECT "
            "coalesce(sum(last_seq - first_seq + 1), 0) FROM connectivity_event "
            "WHERE gateway_id = %s AND kind = 'loss')",
            gw, gw,
        )[0]  # fmt: skip
        return int(covered) >= head

    def _count(self, book: OutboxBook, out: Outcome) -> None:
        gw = self._gateway_pk()
        if gw is None:
            out.reasons.append("the gateway never reached the store")
            return
        q = lambda sql, *a: fetch(self.dsn, sql, *a)  # noqa: E731
        attested: dict[tuple[str, str, int], int] = {}
        for device, tag, start, n in q(
            "SELECT device, tag, period_from, sum(samples) FROM checkpoint_count "
            "WHERE gateway_id = %s GROUP BY 1, 2, 3", gw,
        ):  # fmt: skip
            key = (device, tag, _micros(start))
            attested[key] = attested.get(key, 0) + int(n)
        for key, n in book.tally.items():
            attested[key] = attested.get(key, 0) + n
        stored = {
            (device, tag, _micros(second)): int(n)
            for device, tag, second, n in q(
                "SELECT d.identifier, s.tag, date_trunc('second', x.ts), count(*) FROM sample x "
                "JOIN series s ON s.id = x.series_id JOIN device d ON d.id = s.device_id "
                "WHERE d.gateway_id = %s GROUP BY 1, 2, 3",
                gw,
            )
        }
        out.expected = sum(attested.values())
        out.stored = sum(stored.values())
        (receipt_samples,) = q(
            "SELECT coalesce(sum(samples), 0) FROM receipt WHERE gateway_id = %s "
            "AND device_id IS NOT NULL", gw,
        )[0]  # fmt: skip
        losses = q(
            "SELECT first_seq, last_seq, coalesce(samples, 0) FROM connectivity_event "
            "WHERE gateway_id = %s AND kind = 'loss'", gw,
        )  # fmt: skip
        received = dict(q("SELECT seq, coalesce(samples, 0) FROM receipt WHERE gateway_id = %s",
                          gw))  # fmt: skip
        declared = {s for first, last, _ in losses for s in range(first, last + 1)}
        arrived = sorted(declared & received.keys())  # declared lost, stored all the same
        overstated = sum(int(received[s]) for s in arrived)
        out.lost = sum(int(n) for _, _, n in losses) - overstated
        if arrived:
            out.notes.append(
                f"{len(arrived)} envelopes declared lost arrived all the same "
                f"({_ranges(arrived)}: sent before the outbox dropped them); the declaration "
                f"overstates the loss by {overstated} samples"
            )
        missing = sorted(set(range(1, book.head + 1)) - declared - received.keys())
        out.duplicates = int(receipt_samples) - out.stored
        if missing:
            # a missing checkpoint leaves its counts out of *expected*: rows beyond the
            # attested counts are no evidence of duplicates then
            out.notes.append("samples expected is a lower bound: envelopes are missing")
        else:
            out.duplicates += sum(max(0, n - attested.get(k, 0)) for k, n in stored.items())
        events = q("SELECT first_seq, last_seq FROM connectivity_event WHERE gateway_id = %s "
                   "AND kind <> 'loss'", gw)  # fmt: skip
        if events:
            out.notes.append(f"{len(events)} gap/chain events recorded by ingest")
        out.missing = missing
        seen = {s for first, last in events for s in range(first, last + 1)}
        out.unseen = [s for s in missing if s not in seen]
        _judge(
            out, missing=missing, attested=attested, stored=stored, declared=bool(losses),
        )  # fmt: skip
        (quarantined,) = q("SELECT count(*) FROM quarantine")[0]
        if quarantined:
            out.reasons.append(f"{quarantined} messages quarantined")
        if book.pending_losses:
            out.reasons.append(f"{book.pending_losses} dropped ranges never declared")
        if out.expected == 0:
            out.reasons.append("nothing was read: the scenario proves nothing")


def _judge(
    out: Outcome,
    *,
    missing: list[int],
    attested: dict[tuple[str, str, int], int],
    stored: dict[tuple[str, str, int], int],
    declared: bool,
) -> None:
    if out.duplicates:
        out.reasons.append(f"{out.duplicates} duplicate rows")
    # envelopes lost to the scenario's known cause, every one named by a gap event: the
    # counts cannot balance (their samples and checkpoints are gone), which the notes say
    recorded = bool(missing and out.loss_cause and not out.unseen)
    counts = out.notes if recorded else out.reasons
    if missing:
        counts.append(f"{len(missing)} envelopes missing ({_ranges(missing)})")
    short = out.expected - out.stored - out.lost
    if short:
        counts.append(f"expected − stored − declared = {short}")
    if not declared:
        # without a declared loss every series and second must match what was attested
        wrong = sum(1 for k, n in attested.items() if stored.get(k, 0) != n)
        if wrong:
            counts.append(f"{wrong} series-seconds differ from the attested counts")


@dataclass
class OutboxBook:
    """What the stopped gateway's outbox file says."""

    head: int
    undelivered: int
    pending_losses: int
    #: unattested counts: (device, tag, period start µs) → samples
    tally: dict[tuple[str, str, int], int]


def read_outbox(path: Path) -> OutboxBook:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        head = db.execute("SELECT coalesce(max(seq), 0) FROM head").fetchone()[0]
        undelivered = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        pending = db.execute("SELECT count(*) FROM loss").fetchone()[0]
        tally: dict[tuple[str, str, int], int] = {}
        for start, device, tag, n in db.execute("SELECT start, device, tag, samples FROM tally"):
            tally[(device, tag, start)] = tally.get((device, tag, start), 0) + n
    finally:
        db.close()
    return OutboxBook(int(head), int(undelivered), int(pending), tally)


def _same(stored: Any, served: Any) -> bool:
    if served is None:
        return False
    if isinstance(stored, str):
        return stored == str(served)
    return math.isclose(float(stored), float(served), rel_tol=1e-6, abs_tol=1e-9)


def _micros(ts: dt.datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ranges(seqs: list[int]) -> str:
    parts: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(parts[:5]) + (" …" if len(parts) > 5 else "")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fed_devices(prefix: str, devices: int, tags: int) -> list[dict[str, Any]]:
    """Devices of an in-process gateway fed by the test: never polled (no drivers run)."""
    return [
        {
            "name": f"d{d}",
            "id": f"{prefix}/dev.fed{d}",
            "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
            "groups": [{"name": "g", "interval": "100ms",
                        "tags": [{"name": f"t{t}", "address": f"hr:{t}", "type": "uint16"}
                                 for t in range(tags)]}],
        }
        for d in range(devices)
    ]  # fmt: skip


#: 2025-11-24 16:00:00 UTC in ns: the source time of the first fed poll
FED_T0 = 1_764_000_000_000_000_000


async def feed(stream: Any, devices: int, tags: int, polls: range, *, period_ms: int = 100) -> int:
    """Put polls ``polls`` of every device (one batch per device and poll, source time
    ``FED_T0 + poll × period``, as fast as the gateway takes them); returns samples put."""
    put = 0
    for n in polls:
        ts = FED_T0 + n * period_ms * 1_000_000
        for d in range(devices):
            samples = tuple(Sample(f"t{t}", (n * 7 + d * 31 + t) % 65536, Quality.GOOD, ts)
                            for t in range(tags))  # fmt: skip
            await stream.put(Batch(f"d{d}", "g", samples))
            put += tags
    return put
