"""Modbus collection throughput: prints figures, asserts nothing.

    .venv/bin/python bench/modbus_bench.py [--tags 100000] [--seconds 10] [--sims 2]
        [--peer plc|profiles] [--holes zero|refuse] [--endpoints 8] [--plc-tags 1000] [--gateway]
        [--checkpoint-interval SECONDS]

The peer is one or more simulator processes. ``--peer plc`` (the default) serves line PLCs
(profile ``plc-<N>``, ``--plc-tags`` tags each, scattered in blocks with unused registers
between tags, every type and byte order) on ``--endpoints`` endpoints; with ``--holes zero``
(the default) the unused registers answer zero, as on PLCs that answer a whole register area,
so the planner packs some 50 tags into a 125-register request; with ``--holes refuse`` they
answer "illegal address" and the driver learns to read around them. ``--peer profiles`` serves
machines of every pilot profile (about 17 tags each, in separate groups and tables, holes
refused) behind endpoints of up to 247 unit ids: two tags per request.

Then, each in a fresh process so that its CPU time and peak RSS are its own:

- the **driver**: one ``ModbusDriver`` reading every tag back to back (``read_once`` in a loop)
  for ``--seconds``, decoding and timestamping every sample; one batch in 50 is kept and,
  after the clock stops, checked against the value function the simulators share;
- the **baseline**: a plain pymodbus loop, one client per endpoint, sending the very requests
  the driver's planner settled on and decoding nothing;
- **scheduled**: the driver as the gateway runs it, every group at 1 s on aligned ticks into a
  sample stream; when the links cannot keep up, ticks are missed (counted), never stacked.
  It cannot exceed the configured tags per second;
- with ``--gateway``, the **gateway**: the whole of it as ``guantong gateway run`` starts it,
  from a config file of every simulated machine (YAML, loaded and validated), publishing to a
  Mosquitto of its own: samples/s committed to the outbox, the RSS once the config is loaded,
  while running and at peak (docs/gateway.md, Memory). With ``--checkpoint-interval`` its
  checkpoints come that often (else every 5 minutes, the default), and the counts it has not
  yet attested (series × period, from a reader of its outbox) are sampled once an interval:
  with every tag read every second they must not grow from interval to interval.

For each it prints tags/s, CPU seconds per 100,000 tags and peak RSS, the CPU the simulator
processes spent meanwhile, then the ratios and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _bench import (
    Figures,
    add_json_option,
    cpu_seconds,
    in_child,
    peak_rss_mb,
    spawn,
    start_mosquitto,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNITS_PER_ENDPOINT = 247
SEED = 7
#: one batch in this many is checked against the value function
CHECK_EVERY = 50

#: per endpoint: (machine name, profile, unit id) of each machine behind it
Layout = list[list[tuple[str, str, int]]]


def profiles_layout(tags: int) -> Layout:
    """Machines of every pilot profile in turn, as few endpoints of up to 247 units as fit."""
    from simulators import PROFILES  # noqa: PLC0415

    names = sorted(PROFILES)
    per_machine = sum(len(p.tags) for p in PROFILES.values()) / len(PROFILES)
    machines = max(1, round(tags / per_machine))
    endpoints = -(-machines // UNITS_PER_ENDPOINT)
    share, extra = divmod(machines, endpoints)
    return [
        [(f"m{e}-{u}", names[(e + u) % len(names)], u) for u in range(1, share + (e < extra) + 1)]
        for e in range(endpoints)
    ]


def plc_layout(tags: int, per_plc: int, endpoints: int) -> Layout:
    """``tags`` tags in line PLCs of ``per_plc`` tags, spread over ``endpoints`` endpoints."""
    machines = -(-tags // per_plc)
    out: Layout = [[] for _ in range(min(endpoints, machines))]
    for i in range(machines):
        out[i % len(out)].append((f"plc{i}", f"plc-{per_plc}", i // len(out) + 1))
    return out


# --- roles, each run in its own process ----------------------------------------------------------


async def serve(endpoints: list[tuple[int, list[tuple[str, str, int]]]], holes: str) -> None:
    """Serve (endpoint number, machines) pairs; print the ports as one JSON line, then wait."""
    from simulators import Machine, ModbusEndpoint  # noqa: PLC0415

    started = []
    for number, machines in endpoints:
        endpoint = ModbusEndpoint(
            f"bench{number}",
            [Machine(name, prof, seed=SEED, unit_id=unit) for name, prof, unit in machines],
            holes=holes,  # type: ignore[arg-type]
        )
        await endpoint.start()
        started.append((number, endpoint.port))
    print(json.dumps(started), flush=True)
    await asyncio.Event().wait()


def device_dicts(ports: dict[int, int], layout: Layout) -> Iterator[dict[str, Any]]:
    """Device configs as a config file holds them, one at a time."""
    from simulators import profile  # noqa: PLC0415

    for number, machines in enumerate(layout):
        for name, prof, unit in machines:
            groups: dict[str, list[dict[str, Any]]] = {}
            for spec in profile(prof).tags:
                tag: dict[str, Any] = {"name": spec.name, "address": spec.address}
                tag["type"] = spec.type
                if spec.order:
                    tag["order"] = spec.order
                if spec.length:
                    tag["length"] = spec.length
                if spec.scale != 1.0:
                    tag["scale"] = spec.scale
                groups.setdefault(spec.group, []).append(tag)
            connection = {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": ports[number]}
            yield {
                "name": name,
                "id": f"88.709.911/dev.{name}",
                "connection": {**connection, "unit_id": unit, "timeout": 5},
                "groups": [{"name": g, "interval": 1, "tags": t} for g, t in groups.items()],
            }


def devices(ports: dict[int, int], layout: Layout) -> Iterator[Any]:
    """Device models one at a time: the driver keeps what it needs of each (names, plans)
    and the pydantic model can go, as a gateway that drops its parsed config would."""
    from edge import Device  # noqa: PLC0415

    return (Device.model_validate(d) for d in device_dicts(ports, layout))


def usage(start_cpu: float, started: float, tags: int) -> dict[str, float]:
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - start_cpu
    return {
        "tags": tags,
        "seconds": elapsed,
        "tags_per_s": tags / elapsed,
        "cpu_per_100k": cpu / tags * 100_000 if tags else float("nan"),
        "peak_rss_mb": peak_rss_mb(),
    }


def check(batches: list[Any], layout: Layout) -> dict[str, int]:
    """Compare kept batches with the value function: each sample must hold the value of the
    second it was read in (or of the second before: the answer may cross a second boundary)."""
    from edge import Quality  # noqa: PLC0415
    from simulators import profile, value  # noqa: PLC0415

    profiles = {name: prof for machines in layout for name, prof, _ in machines}
    checked = wrong = not_good = 0
    for batch in batches:
        prof = profiles[batch.device]
        for sample in batch.samples:
            if sample.quality is not Quality.GOOD:
                not_good += 1
                continue
            spec = profile(prof).tag(sample.tag)
            t = sample.edge_ts / 1e9
            expected = [spec.engineering(value(SEED, prof, batch.device, sample.tag, s))
                        for s in (t, t - 1)]  # fmt: skip
            checked += 1
            wrong += sample.value not in expected
    return {"checked": checked, "wrong": wrong, "not_good": not_good}


async def run_driver(ports: dict[int, int], layout: Layout, seconds: float) -> dict[str, Any]:
    from edge import Batch  # noqa: PLC0415
    from edge.drivers.modbus import ModbusDriver  # noqa: PLC0415

    driver = ModbusDriver(devices(ports, layout))
    try:
        await driver.read_once()  # warm up: connect, learn the holes the simulator refuses
        plan = [
            (r.plan.connection.port, r.plan.connection.unit_id, req)
            for r in driver.readers
            for g in r.plan.groups
            for req in r.requests(g.name)
        ]
        tags = 0
        kept: list[Batch] = []
        start_cpu, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            for i, item in enumerate(await driver.read_once()):
                if isinstance(item, Batch):
                    tags += len(item.samples)
                    if i % CHECK_EVERY == 0:
                        kept.append(item)
        result = usage(start_cpu, started, tags)
    finally:
        driver.close()
    result |= check(kept, layout)
    result["configured_tags"] = sum(r.plan.tag_count for r in driver.readers)
    result["requests_per_poll"] = len(plan)
    result["plan"] = [(port, unit, r.function_code, r.start, r.count, len(r.tags))
                      for port, unit, r in plan]  # fmt: skip
    return result


async def run_scheduled(ports: dict[int, int], layout: Layout, seconds: float) -> dict[str, Any]:
    """The driver as the gateway runs it: every group at 1 s on aligned ticks, into a stream."""
    from edge import Batch, SampleStream  # noqa: PLC0415
    from edge.drivers.modbus import ModbusDriver  # noqa: PLC0415

    stream = SampleStream(maxsize=100_000)
    tags = 0

    async def consume() -> None:
        nonlocal tags
        async for item in stream:
            if isinstance(item, Batch):
                tags += len(item.samples)

    driver = ModbusDriver(devices(ports, layout), stream)
    consumer = asyncio.create_task(consume())
    start_cpu, started = time.process_time(), time.perf_counter()
    async with driver:
        await asyncio.sleep(seconds)
    stream.close()
    await consumer
    result = usage(start_cpu, started, tags)
    groups = [g for r in driver.readers for g in r.stats.groups.values()]
    result["polls"] = sum(g.polls for g in groups)
    result["overruns"] = sum(g.overruns for g in groups)
    result["max_lag"] = max((g.max_lag for g in groups), default=0.0)
    return result


async def run_baseline(plan: list[list[int]], seconds: float) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusTcpClient  # noqa: PLC0415

    by_port: dict[int, list[list[int]]] = {}
    for entry in plan:
        by_port.setdefault(entry[0], []).append(entry)
    clients = {}
    for port in by_port:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, reconnect_delay=0)
        await client.connect()
        clients[port] = client

    async def one_pass(port: int) -> int:
        """Every request of one endpoint once, like one pass of the driver's ``read_once``."""
        client = clients[port]
        calls = {
            1: client.read_coils,
            2: client.read_discrete_inputs,
            3: client.read_holding_registers,
            4: client.read_input_registers,
        }
        read = 0
        for _, unit, fc, start, count, ntags in by_port[port]:
            response = await calls[fc](start, count=count, device_id=unit)
            if not response.isError():
                read += ntags
        return read

    tags = 0
    start_cpu, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        tags += sum(await asyncio.gather(*(one_pass(p) for p in by_port)))
    result = usage(start_cpu, started, tags)
    for client in clients.values():
        client.close()
    return result


def rss_mb() -> float:
    """Resident set size now (Linux), where ``VmHWM`` is the peak so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


#: the counts a gateway has not attested yet, series × period, and the oldest one's period
_BACKLOG = """
SELECT count(*), min(start) FROM (
    SELECT start FROM tally GROUP BY start, period_end, device, tag HAVING sum(samples) <> 0)
"""


def backlog(outbox: Path) -> tuple[int, int | None]:
    """The counts not yet attested in the outbox at ``outbox``, read beside the gateway (a
    second connection: WAL readers do not hold up its writer), and the oldest one's period."""
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        rows, oldest = db.execute(_BACKLOG).fetchone()
        return int(rows), oldest
    finally:
        db.close()


async def sample_backlog(
    outbox: Path, every: float, started: float, out: list[tuple[float, int, float | None]]
) -> None:
    """Append (seconds since ``started``, counts not attested, age of the oldest's period in
    seconds) to ``out`` every ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        rows, oldest = await asyncio.to_thread(backlog, outbox)
        age = None if oldest is None else time.time() - oldest / 1e6
        out.append((time.perf_counter() - started, rows, age))


async def run_gateway(config_file: str, seconds: float) -> dict[str, Any]:
    """The whole gateway as ``guantong gateway run`` starts it: the config file loaded and
    validated, the drivers scheduled, envelopes signed into the outbox and published."""
    from gateway._runtime import running  # noqa: PLC0415
    from guantong._configfile import load  # noqa: PLC0415

    began = time.perf_counter()
    config = load(config_file, "gateway")
    loaded = {
        "load_s": time.perf_counter() - began,
        "loaded_rss_mb": rss_mb(),
        "loaded_peak_mb": peak_rss_mb(),
    }
    interval = config.uplink.checkpoint_interval
    gateway_run = running(config, drain_timeout=5)
    del config  # the gateway holds what it keeps, as in the CLI
    start_cpu, started = time.process_time(), time.perf_counter()
    samples_of_backlog: list[tuple[float, int, float | None]] = []
    async with gateway_run as gw:
        sampler = asyncio.create_task(
            sample_backlog(gw.outbox.path, interval or seconds / 4, started, samples_of_backlog)
        )
        # the first commit comes after the first aligned tick, up to a second and more after
        # the start: the rate from then on is what a gateway running for months sustains
        stats = gw.writer.stats
        while stats.commits == 0 and time.perf_counter() - started < seconds:  # noqa: ASYNC110 - a counter, no event to wait on
            await asyncio.sleep(0.02)
        first, first_samples = time.perf_counter(), stats.samples
        await asyncio.sleep(max(0.0, seconds - (first - started)))
        samples = stats.samples
        result = usage(start_cpu, started, samples)
        result["running_rss_mb"] = rss_mb()
        result["first_commit_s"] = first - started
        steady = time.perf_counter() - first
        result["steady_tags_per_s"] = (samples - first_samples) / steady if steady else 0.0
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    result |= loaded
    result["checkpoint_interval"] = interval
    result["checkpoints"] = gw.writer.stats.checkpoints
    result["backlog"] = samples_of_backlog
    result["acked_envelopes"] = gw.uplink.stats.acked
    result["envelopes"] = gw.writer.stats.envelopes
    return result


# --- the orchestrator -------------------------------------------------------------------------


def report(name: str, r: dict[str, Any], sim_cpu: float) -> None:
    print(
        f"{name:9} {r['tags']:>10,} tags in {r['seconds']:5.1f} s  {r['tags_per_s']:>10,.0f} tags/s"
        f"  {r['cpu_per_100k']:6.2f} CPU s/100k tags  peak RSS {r['peak_rss_mb']:6.1f} MB"
        f"  (simulators: {sim_cpu / r['seconds']:.2f} CPU s/s)"
    )


def run_role(role: str, payload: dict[str, Any]) -> None:
    """One of the child processes; measurements go to stdout as one JSON line."""
    if role == "sim":
        # each measuring process exits with requests in flight: pymodbus would log every one
        # with its last frames
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        asyncio.run(serve(payload["endpoints"], payload["holes"]))
        return
    ports = {int(k): v for k, v in payload.get("ports", {}).items()}
    if role == "driver":
        result = asyncio.run(run_driver(ports, payload["layout"], payload["seconds"]))
    elif role == "gateway":
        result = asyncio.run(run_gateway(payload["config"], payload["seconds"]))
    elif role == "scheduled":
        result = asyncio.run(run_scheduled(ports, payload["layout"], payload["seconds"]))
    else:
        result = asyncio.run(run_baseline(payload["plan"], payload["seconds"]))
    print(json.dumps(result))


def start_simulators(
    layout: Layout, processes: int, holes: str, sims: list[Any], files: list[str]
) -> dict[int, int]:
    """Start the simulator processes (appended to ``sims``, their payload files to ``files``
    for the caller to clean up); the port of each endpoint number."""
    endpoints = list(enumerate(layout))
    for i in range(min(processes, len(endpoints))):
        share = endpoints[i::processes]
        sims.append(spawn(__file__, "sim", {"endpoints": share, "holes": holes}, files))
    ports: dict[int, int] = {}
    for proc in sims:
        ports.update(dict(json.loads(proc.stdout.readline())))
    return ports


@contextlib.contextmanager
def gateway_setup(
    ports: dict[int, int], layout: Layout, checkpoint_interval: float | None
) -> Iterator[str]:
    """A Mosquitto of its own and the path of a gateway config publishing to it."""
    directory = Path(tempfile.mkdtemp(prefix="guantong-bench-"))
    broker, mqtt = start_mosquitto(directory, ["max_queued_messages 1000000"])
    try:
        yield str(gateway_config(directory, ports, layout, mqtt, checkpoint_interval))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(directory, ignore_errors=True)


def report_gateway(gateway: dict[str, Any], driver: dict[str, Any]) -> None:
    print(
        f"gateway: first commit {gateway['first_commit_s']:.1f} s after the start, "
        f"{gateway['steady_tags_per_s']:,.0f} tags/s from then on; "
        f"config loaded in {gateway['load_s']:.1f} s, RSS then "
        f"{gateway['loaded_rss_mb']:.0f} MB (peak {gateway['loaded_peak_mb']:.0f} MB), "
        f"running {gateway['running_rss_mb']:.0f} MB; {gateway['envelopes']:,} envelopes "
        f"committed, {gateway['acked_envelopes']:,} acknowledged by the broker; peak RSS "
        f"{gateway['peak_rss_mb'] / driver['peak_rss_mb']:.2f}× the driver's"
    )
    interval = gateway["checkpoint_interval"]
    print(
        f"gateway: {gateway['checkpoints']:,} checkpoints made, every {interval or 300:g} s; "
        "counts not yet attested (series × period) at "
        + ", ".join(
            f"{t:.0f} s: {rows:,}" + ("" if age is None else f" (oldest period {age:.0f} s ago)")
            for t, rows, age in gateway["backlog"]
        )
    )


def gateway_config(
    directory: Path,
    ports: dict[int, int],
    layout: Layout,
    mqtt: int,
    checkpoint_interval: float | None = None,
) -> Path:
    """A gateway config file reading every simulated machine, publishing to ``mqtt``."""
    import yaml  # noqa: PLC0415

    from gateway._keys import create_key  # noqa: PLC0415

    create_key(directory / "gateway.key")
    config = {
        "kind": "gateway",
        "gateway": {
            "id": "88.709.911/gw.bench",
            "enterprise": "88.709.911/firm",
            "key_file": "gateway.key",
        },
        "devices": list(device_dicts(ports, layout)),
        "uplink": {"broker": f"mqtt://127.0.0.1:{mqtt}"},
        "health": {"listen": "127.0.0.1:0"},
    }
    if checkpoint_interval is not None:
        config["uplink"]["checkpoint_interval"] = checkpoint_interval  # type: ignore[index]
    path = directory / "gateway.yaml"
    path.write_text(yaml.dump(config, Dumper=yaml.CSafeDumper, sort_keys=False), encoding="utf-8")
    return path


def figures(
    args: argparse.Namespace,
    driver: dict[str, Any],
    baseline: dict[str, Any],
    scheduled: dict[str, Any],
    gateway: dict[str, Any] | None,
) -> Figures:
    out = Figures("modbus")
    base = "plain pymodbus loop, same requests"
    out.add("driver_rate", "driver, tags read back to back", driver["tags_per_s"], "tags/s",
            baseline["tags_per_s"], base)  # fmt: skip
    out.add("driver_cpu", "driver CPU per 100k tags", driver["cpu_per_100k"], "CPU s",
            baseline["cpu_per_100k"], base)  # fmt: skip
    out.add("driver_peak_rss", "driver peak RSS", driver["peak_rss_mb"], "MB",
            baseline["peak_rss_mb"], base)  # fmt: skip
    out.add("driver_wrong", "samples not matching the value function", driver["wrong"], "samples")
    out.add("scheduled_rate", "driver scheduled at 1 s", scheduled["tags_per_s"], "tags/s",
            args.tags, "configured tags × 1/s")  # fmt: skip
    out.add("scheduled_missed", "missed ticks (scheduled)", scheduled["overruns"], "polls")
    if gateway is not None:
        out.add("gateway_rate", "whole gateway, samples committed to the outbox",
                gateway["tags_per_s"], "tags/s", scheduled["tags_per_s"],
                "the driver scheduled at 1 s")  # fmt: skip
        out.add("gateway_steady_rate", "whole gateway, from its first commit on",
                gateway["steady_tags_per_s"], "tags/s", scheduled["tags_per_s"],
                "the driver scheduled at 1 s")  # fmt: skip
        out.add("gateway_peak_rss", "whole gateway peak RSS", gateway["peak_rss_mb"], "MB",
                driver["peak_rss_mb"], "the driver alone")  # fmt: skip
        out.add("gateway_running_rss", "whole gateway RSS while running",
                gateway["running_rss_mb"], "MB")  # fmt: skip
        out.add("gateway_load", "gateway config load", gateway["load_s"], "s")
        out.add("gateway_checkpoints", "checkpoints made", gateway["checkpoints"], "checkpoints")
        if len(gateway["backlog"]) >= 2:
            out.add("gateway_backlog", "counts not yet attested at the end",
                    gateway["backlog"][-1][1], "series × period", gateway["backlog"][0][1],
                    "the same after one interval")  # fmt: skip
    out.note(f"{driver['configured_tags']:,} tags, {driver['requests_per_poll']:,} requests per "
             f"pass, peer {args.peer}, holes {args.holes}")  # fmt: skip
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sims", type=int, default=2, help="simulator processes")
    parser.add_argument("--peer", choices=["plc", "profiles"], default="plc")
    parser.add_argument("--holes", choices=["zero", "refuse"], default="zero")
    parser.add_argument("--endpoints", type=int, default=8, help="endpoints (plc peer)")
    parser.add_argument("--plc-tags", type=int, default=1000, help="tags per PLC (plc peer)")
    parser.add_argument(
        "--role", choices=["sim", "driver", "scheduled", "baseline", "gateway"],
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--gateway", action="store_true", help="also run a whole gateway with a Mosquitto uplink"
    )
    parser.add_argument(
        "--checkpoint-interval", type=float, metavar="SECONDS",
        help="the gateway's checkpoint interval (default: the config's default, 5 min)",
    )  # fmt: skip
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    add_json_option(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()

    if args.role is not None:
        run_role(args.role, json.loads(Path(args.payload).read_text()))
        return

    if args.peer == "plc":
        layout = plc_layout(args.tags, args.plc_tags, args.endpoints)
    else:
        layout = profiles_layout(args.tags)
    holes = args.holes if args.peer == "plc" else "refuse"
    sims: list[subprocess.Popen[str]] = []
    files: list[str] = []
    try:
        ports = start_simulators(layout, args.sims, holes, sims, files)
        pids = [proc.pid for proc in sims]
        machines = sum(len(m) for m in layout)
        print(
            f"peer {args.peer}, holes {holes}: {machines:,} simulated machines on "
            f"{len(layout)} endpoints in {len(sims)} simulator processes; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        common = {"ports": ports, "layout": layout, "seconds": args.seconds}
        sim_cpu = {}

        def measure(role: str, payload: dict[str, Any]) -> dict[str, Any]:
            before = sum(map(cpu_seconds, pids))
            result = in_child(__file__, role, payload)
            sim_cpu[role] = sum(map(cpu_seconds, pids)) - before
            return result

        driver = measure("driver", common)
        baseline = measure("baseline", {"plan": driver["plan"], "seconds": args.seconds})
        scheduled = measure("scheduled", common)
        if args.gateway:
            with gateway_setup(ports, layout, args.checkpoint_interval) as config:
                gateway = measure("gateway", {"config": config, "seconds": args.seconds})
        print(
            f"{driver['configured_tags']:,} tags configured, read with "
            f"{driver['requests_per_poll']:,} requests per pass "
            f"({driver['configured_tags'] / driver['requests_per_poll']:.1f} tags per request); "
            f"checked {driver['checked']:,} samples against the value function: "
            f"{driver['wrong']:,} wrong, {driver['not_good']:,} not Good"
        )
        report("driver", driver, sim_cpu["driver"])
        report("pymodbus", baseline, sim_cpu["baseline"])
        report("scheduled", scheduled, sim_cpu["scheduled"])
        print(
            f"scheduled: every group at 1 s; {scheduled['polls']:,} group polls, "
            f"{scheduled['overruns']:,} missed ticks, max lag {scheduled['max_lag']:.1f} s"
        )
        if args.gateway:
            report("gateway", gateway, sim_cpu["gateway"])
            report_gateway(gateway, driver)
        print(
            f"ratio driver/pymodbus: {driver['tags_per_s'] / baseline['tags_per_s']:.2f}× tags/s, "
            f"{driver['cpu_per_100k'] / baseline['cpu_per_100k']:.2f}× CPU per tag; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        figures(args, driver, baseline, scheduled, gateway if args.gateway else None).write(
            args.json
        )
    finally:
        for proc in sims:
            proc.terminate()
            proc.wait(10)
        for name in files:
            os.unlink(name)


if __name__ == "__main__":
    main()
