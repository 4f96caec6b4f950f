"""``guantong demo``: a simulated factory whose data flows, signed, into the platform's store.

Everything runs on 127.0.0.1 on free ports with no set-up: PostgreSQL (a cluster of the
demo's own under the work directory, or a running server given by DSN), an MQTT broker
(Mosquitto when installed, otherwise amqtt embedded: then the gateway and ingest speak MQTT
3.1.1), the identifier node with the gateway and its devices registered, ingest verifying
every envelope into the store, the evidence API and web page over that store, the demo
factory's PLC simulators and the gateway. The demo writes each one's config file into the work
directory first, so what runs is what a user would configure, and the files show how.

The services are started in the order of :data:`SERVICES` and stopped in reverse: the gateway
first (it delivers what it holds), the servers last. Each is an async context manager taking
the :class:`Demo`, on which it leaves what later ones need.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import conninfo

import evidence
from gateway._runtime import Gateway
from guantong import _configfile
from guantong._demo import _services
from guantong._demo._servers import (
    DATABASE,
    EMBEDDED_USERS,
    DemoError,
    choose_broker,
    embedded_broker,
    embedded_broker_version,
    free_port,
    mosquitto,
    postgres,
)
from guantong.cli.sim import gateway_config
from ingest import Ingest
from simulators import PROFILES

__all__ = ["SERVICES", "Demo", "DemoError", "Summary", "run_demo"]

#: machines per generated Modbus endpoint when ``size`` asks for more than the demo factory has
_UNITS_PER_ENDPOINT = 10


@dataclass
class Demo:
    """What the demo runs, and what its services leave for the ones started after them."""

    workdir: Path
    say: Callable[[str], None]
    #: config files by kind, written by :func:`write_configs`
    files: dict[str, Path] = field(default_factory=dict)
    #: a running server to use instead of a cluster of the demo's own
    database: str | None = None
    #: the MQTT broker that runs: ``mosquitto`` (MQTT 5) or ``embedded`` (amqtt, MQTT 3.1.1)
    broker: str = "mosquitto"
    #: the store and the node, for any service that reads them (ingest, evidence)
    dsn: str = ""
    node_url: str = ""
    pg_port: int = 0
    broker_port: int = 0
    #: the evidence page's admin token, made on every start and shown once
    token: str = ""
    #: running, for the status line
    ingest: Ingest | None = None
    gateway: Gateway | None = None


@contextlib.asynccontextmanager
async def _database(demo: Demo) -> Any:
    if demo.database is not None:
        shown = demo.database
        if conninfo.conninfo_to_dict(shown).get("password"):
            shown = conninfo.make_conninfo(shown, password="***")  # noqa: S106 - a mask
        demo.say(f"PostgreSQL: {shown} (given)")
        yield
        return
    async with postgres(demo.workdir, demo.pg_port) as directory:
        demo.say(f"PostgreSQL: {demo.dsn} (cluster in {directory})")
        yield


@contextlib.asynccontextmanager
async def _broker(demo: Demo) -> Any:
    url = f"mqtt://127.0.0.1:{demo.broker_port}"
    if demo.broker == "embedded":
        async with embedded_broker(demo.workdir, demo.broker_port):
            demo.say(
                f"MQTT broker: {url} (embedded amqtt {embedded_broker_version()}, MQTT 3.1.1, "
                "topics gt/v1/#; sessions in memory only, a demo's broker: docs/demo.md)"
            )
            yield
        return
    async with mosquitto(demo.workdir, demo.broker_port):
        demo.say(f"MQTT broker: {url} (Mosquitto, MQTT 5, topics gt/v1/#)")
        yield


Service = Callable[[Demo], AbstractAsyncContextManager[None]]

#: started in this order, stopped in reverse
SERVICES: list[Service] = [
    _database,
    _broker,
    _services.identifier_node,
    _services.ingest,
    _services.evidence_service,
    _services.plcs,
    _services.gateway,
]


def write_configs(demo: Demo, factory_file: Path, *, size: int, payload: str) -> None:
    """Write the factory, gateway, identifier node, ingest and evidence configs into the work
    directory, with free ports, so the demo never collides with a running server."""
    workdir = demo.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    demo.pg_port, demo.broker_port = free_port(), free_port()
    demo.dsn = demo.database or f"postgresql://postgres@127.0.0.1:{demo.pg_port}/{DATABASE}"
    factory = yaml.safe_load(factory_file.read_text(encoding="utf-8"))
    for endpoint in factory["endpoints"]:
        if "port" in endpoint:
            endpoint["port"] = free_port()
    factory.pop("control", None)
    _grow(factory, size)
    loaded = _write(demo, "factory", factory)
    gateway = gateway_config(loaded, base_dir=workdir)
    broker = f"mqtt://127.0.0.1:{demo.broker_port}"
    # the embedded broker speaks MQTT 3.1.1 only, and keeps a session for named users only
    mqtt311 = (
        {"protocol": "3.1.1", "username": EMBEDDED_USERS["gateway"]}
        if demo.broker == "embedded"
        else {}
    )
    gateway["uplink"] = {"broker": broker, **mqtt311, "format": payload}
    gateway["health"] = {"listen": "127.0.0.1:0"}
    _write(demo, "gateway", gateway)
    node, node_port = ".".join(factory["firm"]["prefix"].split(".")[:2]), free_port()
    _write(demo, "identifiers", {
        "kind": "identifiers",
        "listen": {"host": "127.0.0.1", "port": node_port},
        "database": {"dsn": demo.dsn, "pool_max": 2},
        "authoritative": [node],
    })  # fmt: skip
    _write(demo, "ingest", {
        "kind": "ingest",
        "database": {"dsn": demo.dsn},
        "identifiers": {"node": f"http://127.0.0.1:{node_port}"},
        "mqtt": {"broker": broker, "client_id": "guantong-demo",
                 **({**mqtt311, "username": EMBEDDED_USERS["ingest"]} if mqtt311 else {})},
        # a small factory: decoding in the ingest process starts faster than worker processes
        "batch": {"decode_workers": 0},
        "health": {"listen": "127.0.0.1:0"},
    })  # fmt: skip
    demo.token, sha256 = evidence.new_token()
    _write(demo, "evidence", {
        "kind": "evidence",
        "listen": f"127.0.0.1:{free_port()}",
        "database": {"dsn": demo.dsn, "pool_max": 2},
        # written by the identifier node's service once it has made the token
        "identifiers": {
            "node": f"http://127.0.0.1:{node_port}",
            "token_file": _services.NODE_TOKEN_FILE,
        },
        "metrics": {"fresh_within": "30s", "outage_after": "10s"},
        "tokens": [{"name": "demo", "role": "admin", "sha256": sha256}],
    })  # fmt: skip


def _grow(factory: dict[str, Any], size: int) -> None:
    """Add generated Modbus machines until the factory has ``size``, 10 per endpoint."""
    have = sum(len(line["machines"]) for line in factory["lines"])
    extra, machines = max(0, size - have), []
    profiles = sorted(PROFILES)
    for n in range(extra):
        endpoint = f"extra-{n // _UNITS_PER_ENDPOINT + 1:02d}"
        if n % _UNITS_PER_ENDPOINT == 0:
            factory["endpoints"].append(
                {"name": endpoint, "protocol": "modbus-tcp", "host": "127.0.0.1",
                 "port": free_port()}
            )  # fmt: skip
        profile = profiles[n % len(profiles)]
        machines.append({"name": f"{profile}-x{n + 1:03d}", "profile": profile,
                         "endpoint": endpoint, "unit_id": n % _UNITS_PER_ENDPOINT + 1})  # fmt: skip
    if machines:
        factory["lines"].append({"name": "Extra", "machines": machines})


def _write(demo: Demo, kind: str, data: dict[str, Any]) -> Any:
    path = demo.workdir / f"{kind}.yaml"
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=None)
    path.write_text(f"# written by `guantong demo` on every start\n{text}", encoding="utf-8")
    demo.files[kind] = path
    return _configfile.load(path, kind)


@dataclass(frozen=True)
class Summary:
    """What the store holds when the demo stops (all runs that used it, not only this one)."""

    samples: int
    envelopes: int
    devices: int
    quarantined: int
    events: int

    def __str__(self) -> str:
        return (
            f"stored {self.samples} samples in {self.envelopes} envelopes from {self.devices} "
            f"devices; {self.quarantined} quarantined, {self.events} connectivity events"
        )


async def summarize(dsn: str) -> Summary:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM sample), (SELECT count(*) FROM receipt),"
            " (SELECT count(DISTINCT device_id) FROM receipt),"
            " (SELECT count(*) FROM quarantine), (SELECT count(*) FROM connectivity_event)"
        )
        rows = await cur.fetchall()
    return Summary(*(int(v) for v in rows[0]))


async def run_demo(
    factory_file: Path,
    workdir: Path,
    *,
    duration: float | None,
    size: int = 0,
    payload: str = "json",
    database: str | None = None,
    broker: str = "auto",
    say: Callable[[str], None],
    status: Callable[[str], None],
) -> Summary | None:
    """Run for ``duration`` seconds once ready, or until SIGINT (Ctrl-C), SIGTERM or SIGHUP;
    then stop everything in reverse order, so that nothing is left running, and say what the
    store holds (None if stopped before ingest ran)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP: the terminal was closed; the servers, in sessions of their own, would stay
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    demo = Demo(workdir=workdir, say=say, database=database, broker=choose_broker(broker))
    if broker == "auto" and demo.broker == "embedded":
        say("Mosquitto is not installed: the demo runs its embedded MQTT broker")
    write_configs(demo, factory_file, size=size, payload=payload)
    summary: list[Summary] = []
    async with contextlib.AsyncExitStack() as stack:
        for service in SERVICES:
            if stop.is_set():
                break
            await stack.enter_async_context(service(demo))
            if service is _database:  # runs after every later service has stopped
                stack.push_async_callback(_summarize, demo, summary)
        if not stop.is_set():
            say(f"ready in {time.monotonic() - started:.1f} s; Ctrl-C stops")
            if demo.gateway is None or demo.ingest is None:
                raise DemoError("the demo runs no gateway or no ingest")
            await _watch(
                demo.gateway,
                demo.ingest,
                stop,
                started=started,
                duration=duration,
                status=status,
                say=say,
            )
    return summary[0] if summary else None


async def _summarize(demo: Demo, into: list[Summary]) -> None:
    if demo.ingest is not None:  # it created the schema
        into.append(await summarize(demo.dsn))


async def _watch(
    gw: Gateway,
    ingest: Ingest,
    stop: asyncio.Event,
    *,
    started: float,
    duration: float | None,
    status: Callable[[str], None],
    say: Callable[[str], None],
) -> None:
    """One status line a second until ``stop``, or for ``duration`` seconds; says when the
    first rows are committed (counted from ``started``, the demo's start)."""
    until = None if duration is None else time.monotonic() + duration

    async def first_rows() -> None:
        while ingest.stats.rows == 0:
            await ingest.committed()
        say(f"first samples committed {time.monotonic() - started:.1f} s after the start")

    first = asyncio.create_task(first_rows())
    try:
        await _status_lines(gw, ingest, stop, until, status)
    finally:
        first.cancel()


async def _status_lines(
    gw: Gateway,
    ingest: Ingest,
    stop: asyncio.Event,
    until: float | None,
    status: Callable[[str], None],
) -> None:
    devices = gw.devices
    last = (time.monotonic(), gw.stream.stats.samples, ingest.stats.rows)
    while not stop.is_set() and (until is None or time.monotonic() < until):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1)
        now, read, committed = time.monotonic(), gw.stream.stats.samples, ingest.stats.rows
        up = sum(1 for d in devices if gw.writer.stats.device_up.get(d, True))
        envelopes, _ = gw.outbox.depth()
        quarantined = sum(ingest.verifier.stats.quarantined.values())
        elapsed = now - last[0]
        status(
            f"read {(read - last[1]) / elapsed:7.0f} samples/s | committed "
            f"{(committed - last[2]) / elapsed:7.0f} samples/s ({committed} rows, "
            f"{quarantined} quarantined) | devices {up}/{len(devices)} "
            f"| outbox {envelopes}"
        )
        last = (now, read, committed)
