"""End to end at a fixed rate: simulators → gateway → Mosquitto → ingest → PostgreSQL; prints
figures, asserts nothing.

    .venv/bin/python bench/e2e_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--tags 100000] [--seconds 300] [--sims 2] [--endpoints 8] [--plc-tags 1000]

The rate is fixed by the configuration, as in a factory: ``--tags`` tags of line PLCs (the
Modbus simulators of ``modbus_bench.py``, ``--sims`` processes) read every second, so the
offered load is ``--tags`` samples/s for ``--seconds``. Every part is its own process, as
deployed: the gateway (``gateway.running`` on the YAML config file, as ``guantong gateway
run`` starts it, with a health port), a Mosquitto of its own, ``guantong ingest run`` into a
throwaway database on the server of ``--dsn``, and an identifier node (in this process) with
the gateway's key and devices registered.

After ``--seconds`` the gateway stops as on SIGTERM (drivers stop, the last envelopes are
committed and delivered), ingest gets until the database stops growing for 30 s, then:

- **rate**: samples stored per second of the run, and what the gateway read (polls it could
  not fit into their second are missed ticks, counted, not stacked);
- **loss**: samples the gateway committed minus samples stored minus samples in declared
  loss records (the store's unique key absorbs redeliveries, so a duplicate is not counted
  twice) minus those still in the outbox if the drain did not deliver everything (kept, sent
  on the next start; counted apart as undelivered), and the gaps ingest recorded in the
  envelope chain;
- **latency**: sample time (the gateway's read time) to the commit of its row, p50 and p99,
  from PostgreSQL's commit timestamps when the server keeps them (``track_commit_timestamp``),
  else from envelope creation to commit per receipt (which leaves out up to one envelope
  delay of batching; the output says which);
- the CPU seconds per second of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _bench import Figures, add_json_option, cpu_seconds, free_port, registered_node
from _bench import start_mosquitto as start_broker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import modbus_bench  # noqa: E402 - the simulators and the gateway config of the Modbus bench
import psycopg  # noqa: E402

FIRM = "88.709.911"
GATEWAY = f"{FIRM}/gw.bench"
#: a gateway that committed everything gets this long to deliver it before it stops
DRAIN_SECONDS = 120.0
#: ingest is done when the stored rows have not grown for this long
SETTLE_SECONDS = 30.0


# --- the gateway, in a process of its own ----------------------------------------------------


async def run_gateway(config_file: str, seconds: float, ready_file: str) -> dict[str, Any]:
    """The gateway as ``guantong gateway run`` starts it, for ``seconds``, then stopped as on
    SIGTERM; its counters as JSON."""
    from edge.drivers import drivers_for  # noqa: PLC0415
    from gateway._runtime import Gateway, _running  # noqa: PLC0415
    from guantong._configfile import load  # noqa: PLC0415

    began = time.perf_counter()
    config = load(config_file, "gateway")
    gateway = Gateway(config, drain_timeout=DRAIN_SECONDS)
    drivers = drivers_for(config.devices, gateway.stream)
    load_s = time.perf_counter() - began
    del config
    async with _running(gateway, drivers) as gw:
        Path(ready_file).write_text(str(time.time()), encoding="utf-8")  # noqa: ASYNC240
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        ran = time.perf_counter() - started
        read_in_run = gw.stream.stats.samples
    from gateway._outbox import Outbox  # noqa: PLC0415

    with Outbox(gw.outbox.path) as box:  # what the drain could not deliver
        left, left_samples = outbox_samples(box)
    groups = [g for d in drivers for r in d.readers for g in r.stats.groups.values()]
    return {
        "load_s": load_s,
        "seconds": ran,
        "samples_read": gw.stream.stats.samples,
        "samples_read_in_run": read_in_run,
        "samples_committed": gw.writer.stats.samples,
        "envelopes": gw.writer.stats.envelopes,
        "losses_declared": gw.writer.stats.losses,
        "acked": gw.uplink.stats.acked,
        "outbox_left": left,
        "outbox_left_samples": left_samples,
        "polls": sum(g.polls for g in groups),
        "missed_ticks": sum(g.overruns for g in groups),
        "max_lag": max((g.max_lag for g in groups), default=0.0),
        "stream_waited": gw.stream.stats.waited,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def outbox_samples(box: Any) -> tuple[int, int]:
    """(envelopes, samples) in an open outbox."""
    from gateway.protocol import decode_json  # noqa: PLC0415

    left, _ = box.depth()
    return left, sum(len(decode_json(e.payload).envelope.samples) for e in box.peek(left))


# --- the orchestrator -------------------------------------------------------------------------


def ingest_config(directory: Path, dsn: str, node_url: str, mqtt: int, health: int) -> Path:
    import yaml  # noqa: PLC0415

    path = directory / "ingest.yaml"
    doc = {
        "kind": "ingest",
        "database": {"dsn": dsn},
        "identifiers": {"node": node_url},
        "mqtt": {"broker": f"mqtt://127.0.0.1:{mqtt}", "client_id": "bench-e2e-ingest"},
        "health": {"listen": f"127.0.0.1:{health}"},
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


async def wait_subscribed(port: int, proc: subprocess.Popen[bytes]) -> None:
    import httpx  # noqa: PLC0415

    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(60):
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"ingest exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
                if health["mqtt"]["subscribed"]:
                    return
            await asyncio.sleep(0.2)


def stored(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM sample").fetchone()[0])  # type: ignore[index]


async def settle(dsn: str, expected: int) -> tuple[int, float]:
    """Wait until ``expected`` rows are stored or the count stops growing; (rows, seconds)."""
    began = time.perf_counter()
    last, since = -1, time.perf_counter()
    while True:
        rows = await asyncio.to_thread(stored, dsn)
        if rows >= expected:
            return rows, time.perf_counter() - began
        if rows != last:
            last, since = rows, time.perf_counter()
        elif time.perf_counter() - since > SETTLE_SECONDS:
            return rows, time.perf_counter() - began
        await asyncio.sleep(1)


def latency(dsn: str) -> dict[str, Any]:
    """p50/p99 of sample time to commit (see the module's docstring for the two methods)."""
    with psycopg.connect(dsn) as conn:
        commit_ts = conn.execute("SHOW track_commit_timestamp").fetchone()[0] == "on"  # type: ignore[index]
        if commit_ts:
            # every 50th series: the latencies of whole series, all through the run
            row = conn.execute(
                """SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lat),
                          percentile_disc(0.99) WITHIN GROUP (ORDER BY lat),
                          max(lat), count(*)
                   FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) AS lat
                         FROM sample WHERE series_id % 50 = 0) s"""
            ).fetchone()
            method = "sample time to the commit of its row (commit timestamps, every 50th series)"
        else:
            row = conn.execute(
                """SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lat),
                          percentile_disc(0.99) WITHIN GROUP (ORDER BY lat),
                          max(lat), count(*)
                   FROM (SELECT extract(epoch FROM committed - created) AS lat
                         FROM receipt WHERE kind = 1) r"""
            ).fetchone()
            method = "envelope creation to commit, per receipt (no commit timestamps kept)"
        gaps = conn.execute(
            "SELECT count(*), coalesce(sum(last_seq - first_seq + 1), 0) FROM connectivity_event "
            "WHERE kind IN ('gap', 'chain_break')"
        ).fetchone()
        declared = conn.execute(
            "SELECT coalesce(sum(samples), 0) FROM connectivity_event WHERE kind = 'loss'"
        ).fetchone()[0]  # type: ignore[index]
    assert row is not None
    assert gaps is not None
    p50, p99, worst, n = row
    return {
        "p50": float(p50 or 0), "p99": float(p99 or 0), "max": float(worst or 0), "count": n,
        "method": method, "gap_events": gaps[0], "gap_envelopes": int(gaps[1]),
        "declared_loss_samples": int(declared),
    }  # fmt: skip


async def bench(args: argparse.Namespace, dsn: str, figures: Figures) -> None:  # noqa: PLR0915
    from common import load_key  # noqa: PLC0415
    from gateway.protocol import public_key_bytes  # noqa: PLC0415
    from ingest import migrate  # noqa: PLC0415

    migrate(dsn)
    layout = modbus_bench.plc_layout(args.tags, args.plc_tags, args.endpoints)
    directory = Path(tempfile.mkdtemp(prefix="guantong-e2e-bench-"))
    sims: list[subprocess.Popen[str]] = []
    files: list[str] = []
    procs: list[subprocess.Popen[Any]] = []
    broker, mqtt = start_broker(directory, ["max_queued_messages 1000000"])
    try:
        ports = modbus_bench.start_simulators(layout, args.sims, "zero", sims, files)
        config = modbus_bench.gateway_config(directory, ports, layout, mqtt)
        public = public_key_bytes(load_key(directory / "gateway.key"))
        devices = [f"{FIRM}/dev.{name}" for machines in layout for name, _, _ in machines]
        machines = len(devices)
        print(
            f"{args.tags:,} tags at 1 s = {args.tags:,} samples/s offered, {machines:,} "
            f"simulated PLCs on {len(layout)} endpoints in {len(sims)} simulator processes, "
            f"for {args.seconds:g} s; {os.cpu_count()} CPUs; load average {load()}",
            flush=True,
        )
        async with registered_node(dsn, f"{FIRM}/firm", {GATEWAY: (public, devices)}) as node:
            health = free_port()
            argv = [sys.executable, "-m", "guantong", "ingest", "run", "-c",
                    str(ingest_config(directory, dsn, node.url, mqtt, health))]  # fmt: skip
            ingest = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
            procs.append(ingest)
            await wait_subscribed(health, ingest)

            ready = directory / "gateway.ready"
            payload = {"config": str(config), "seconds": args.seconds, "ready": str(ready)}
            payload_file = directory / "gateway.json"
            payload_file.write_text(json.dumps(payload), encoding="utf-8")
            gateway = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, __file__, "--role", "gateway", "--payload", str(payload_file)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(gateway)
            while not ready.exists():  # the gateway loads its config first
                if gateway.poll() is not None:
                    raise SystemExit("the gateway stopped before running")
                await asyncio.sleep(0.1)
            cpu = {"gateway": [gateway.pid], "ingest": [ingest.pid],
                   "simulators": [p.pid for p in sims], "Mosquitto": [broker.pid]}  # fmt: skip
            cpu_before = {role: sum(map(cpu_seconds, pids)) for role, pids in cpu.items()}
            load_during: list[float] = []
            started = time.perf_counter()

            async def sample_load() -> None:
                while True:
                    await asyncio.sleep(min(30.0, args.seconds / 2))
                    load_during.append(os.getloadavg()[0])

            sampler = asyncio.create_task(sample_load())
            # the gateway's run includes its drain; CPU is taken at the end of its seconds
            await asyncio.sleep(args.seconds)
            cpu_used = {role: sum(map(cpu_seconds, pids)) - cpu_before[role]
                        for role, pids in cpu.items()}  # fmt: skip
            sampler.cancel()
            out, _ = await asyncio.to_thread(gateway.communicate)
            if gateway.returncode != 0:
                raise SystemExit(f"the gateway failed ({gateway.returncode})")
            gw = json.loads(out.splitlines()[-1])
            rows, settle_s = await settle(dsn, gw["samples_committed"])
            ran = time.perf_counter() - started
            ingest.terminate()
            ingest.wait(30)
            lat = await asyncio.to_thread(latency, dsn)
    finally:
        for proc in [*procs, *sims]:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        broker.terminate()
        broker.wait()
        for name in files:
            os.unlink(name)
        shutil.rmtree(directory, ignore_errors=True)

    seconds = gw["seconds"]
    read_rate = gw["samples_read_in_run"] / seconds
    # what the drain could not deliver is still in the outbox (durable, sent on the next
    # start): undelivered, not lost
    undelivered = gw["outbox_left_samples"]
    lost = gw["samples_committed"] - rows - lat["declared_loss_samples"] - undelivered
    stored_rate = rows / seconds
    print(
        f"gateway: config loaded in {gw['load_s']:.1f} s; read {gw['samples_read']:,} samples "
        f"({read_rate:,.0f}/s; {gw['missed_ticks']:,} missed ticks of {gw['polls']:,} group "
        f"polls, max lag {gw['max_lag']:.1f} s), committed {gw['samples_committed']:,} in "
        f"{gw['envelopes']:,} envelopes, {gw['acked']:,} acknowledged by the broker, "
        f"{gw['outbox_left']:,} left in the outbox ({undelivered:,} samples, undelivered but "
        f"kept); peak RSS {gw['peak_rss_mb']:.0f} MB"
    )
    print(
        f"stored: {rows:,} samples = {stored_rate:,.0f} samples/s over the {seconds:.0f} s run "
        f"(target {args.tags:,}/s; ratio to the offered rate {stored_rate / args.tags:.2f}); "
        f"ingest needed {settle_s:.1f} s after the gateway stopped"
    )
    print(
        f"loss: {lost:,} samples (committed − stored − declared {lat['declared_loss_samples']:,}"
        f" − left in the outbox); chain gaps: {lat['gap_events']} events, "
        f"{lat['gap_envelopes']} envelopes"
    )
    print(
        f"latency, {lat['method']}: p50 {lat['p50'] * 1000:.0f} ms, p99 "
        f"{lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms ({lat['count']:,} values)"
    )
    print("CPU s/s: " + ", ".join(f"{r} {s / args.seconds:.2f}" for r, s in cpu_used.items()))
    print(f"load average during the run: {', '.join(f'{x:.2f}' for x in load_during)}; "
          f"now {load()}; whole run {ran:.0f} s")  # fmt: skip

    figures.add("stored_rate", "samples stored per second", stored_rate, "samples/s",
                args.tags, "offered (tags × 1/s)")  # fmt: skip
    figures.add("read_rate", "samples read by the gateway per second", read_rate, "samples/s",
                args.tags, "offered (tags × 1/s)")  # fmt: skip
    figures.add("lost", "samples lost (committed − stored − declared − left in the outbox)",
                lost, "samples")  # fmt: skip
    figures.add("undelivered", "samples left in the outbox after the drain", undelivered,
                "samples")  # fmt: skip
    figures.add("gap_envelopes", "envelopes missing from the chain", lat["gap_envelopes"],
                "envelopes")  # fmt: skip
    figures.add("missed_ticks", "polls missed (did not fit their second)", gw["missed_ticks"],
                "polls")  # fmt: skip
    figures.add("latency_p50", "latency p50, sample time to commit", lat["p50"], "s")
    figures.add("latency_p99", "latency p99, sample time to commit", lat["p99"], "s")
    figures.add("duration", "duration of the fixed-rate run", seconds, "s")
    figures.add("gateway_peak_rss", "gateway peak RSS", gw["peak_rss_mb"], "MB")
    for role, used in cpu_used.items():
        figures.add(f"cpu_{role.lower()}", f"CPU of {role}", used / args.seconds, "CPU s/s")
    figures.note(f"latency method: {lat['method']}")
    figures.note(f"load average during the run: {', '.join(f'{x:.2f}' for x in load_during)}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tags", type=int, default=100_000, help="read at 1 s: samples/s")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--sims", type=int, default=2, help="simulator processes")
    parser.add_argument("--endpoints", type=int, default=8)
    parser.add_argument("--plc-tags", type=int, default=1000, help="tags per PLC")
    parser.add_argument("--role", choices=["gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.role == "gateway":
        payload = json.loads(Path(args.payload).read_text(encoding="utf-8"))
        result = asyncio.run(run_gateway(payload["config"], payload["seconds"], payload["ready"]))
        print(json.dumps(result))
        return

    figures = Figures("e2e")
    name = f"e2e_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
        asyncio.run(bench(args, dsn, figures))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]
    figures.write(args.json)


if __name__ == "__main__":
    main()
