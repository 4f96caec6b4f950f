"""Modbus collection throughput: prints figures, asserts nothing.

    .venv/bin/python bench/modbus_bench.py [--tags 100000] [--seconds 10] [--sims 2]

Simulator processes serve machines of every profile (scattered register blocks, mixed types
and byte orders, holes the simulator refuses) behind many endpoints of up to 247 unit ids.
Then, each in a fresh process so that its CPU time and peak RSS are its own:

- the **driver**: one ``ModbusDriver`` reading every tag back to back (``read_once`` in a loop)
  for ``--seconds``, decoding and timestamping every sample;
- the **baseline**: a plain pymodbus loop, one client per endpoint, sending the very requests
  the driver's planner settled on and decoding nothing;
- **scheduled**: the driver as the gateway runs it, every group at 1 s on aligned ticks into a
  sample stream; when the links cannot keep up, ticks are missed (counted), never stacked.

For each it prints tags/s, CPU seconds per 100,000 tags and peak RSS, then the ratio. The
simulators (pymodbus servers computing every value at request time) share the machine's cores
and are usually the bottleneck (see FINDINGS): the CPU per 100k tags is the figure that says
what the gateway itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _bench import in_child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UNITS_PER_ENDPOINT = 247
SEED = 7


def machines_for(endpoint: int, units: int) -> list[tuple[str, str, int]]:
    from simulators import PROFILES  # noqa: PLC0415

    names = sorted(PROFILES)
    return [
        (f"m{endpoint}-{unit}", names[(endpoint + unit) % len(names)], unit)
        for unit in range(1, units + 1)
    ]


def layout(tags: int) -> list[int]:
    """Units per endpoint for about ``tags`` tags, spread evenly over as few endpoints as fit."""
    from simulators import PROFILES  # noqa: PLC0415

    per_machine = sum(len(p.tags) for p in PROFILES.values()) / len(PROFILES)
    machines = max(1, round(tags / per_machine))
    endpoints = -(-machines // UNITS_PER_ENDPOINT)
    share, extra = divmod(machines, endpoints)
    return [share + (i < extra) for i in range(endpoints)]


# --- roles, each run in its own process ----------------------------------------------------------


async def serve(endpoints: list[tuple[int, int]]) -> None:
    """Serve (endpoint number, units) pairs; print the ports as one JSON line, then wait."""
    from simulators import Machine, ModbusEndpoint  # noqa: PLC0415

    started = []
    for number, units in endpoints:
        machines = [
            Machine(name, prof, seed=SEED, unit_id=unit)
            for name, prof, unit in machines_for(number, units)
        ]
        endpoint = ModbusEndpoint(f"bench{number}", machines)
        await endpoint.start()
        started.append((number, endpoint.port))
    print(json.dumps(started), flush=True)
    await asyncio.Event().wait()


def devices(ports: dict[int, int], units: list[int]) -> Iterator[Any]:
    """Device configs one at a time: the driver keeps what it needs of each (names, plans)
    and the pydantic model can go, as a gateway that drops its parsed config would."""
    from edge import Device  # noqa: PLC0415
    from simulators import profile  # noqa: PLC0415

    for number, count in enumerate(units):
        for name, prof, unit in machines_for(number, count):
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
            yield Device.model_validate(
                {
                    "name": name,
                    "id": f"88.709.911/dev.{name}",
                    "connection": {**connection, "unit_id": unit, "timeout": 5},
                    "groups": [{"name": g, "interval": 1, "tags": t} for g, t in groups.items()],
                }
            )


def usage(start_cpu: float, started: float, tags: int) -> dict[str, float]:
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - start_cpu
    return {
        "tags": tags,
        "seconds": elapsed,
        "tags_per_s": tags / elapsed,
        "cpu_per_100k": cpu / tags * 100_000 if tags else float("nan"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def run_driver(ports: dict[int, int], units: list[int], seconds: float) -> dict[str, Any]:
    from edge import Batch, Quality  # noqa: PLC0415
    from edge.drivers.modbus import ModbusDriver  # noqa: PLC0415

    driver = ModbusDriver(devices(ports, units))
    try:
        await driver.read_once()  # warm up: connect, learn the holes the simulator refuses
        plan = [
            (r.plan.connection.port, r.plan.connection.unit_id, req)
            for r in driver.readers
            for g in r.plan.groups
            for req in r.requests(g.name)
        ]
        tags = good = 0
        start_cpu, started = time.process_time(), time.perf_counter()
        while time.perf_counter() - started < seconds:
            for item in await driver.read_once():
                if isinstance(item, Batch):
                    tags += len(item.samples)
                    good += sum(1 for s in item.samples if s.quality is Quality.GOOD)
        result = usage(start_cpu, started, tags)
    finally:
        driver.close()
    result["good"] = good
    result["configured_tags"] = sum(r.plan.tag_count for r in driver.readers)
    result["requests_per_poll"] = len(plan)
    result["plan"] = [(port, unit, r.function_code, r.start, r.count, len(r.tags))
                      for port, unit, r in plan]  # fmt: skip
    return result


async def run_scheduled(ports: dict[int, int], units: list[int], seconds: float) -> dict[str, Any]:
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

    consumer = asyncio.create_task(consume())
    start_cpu, started = time.process_time(), time.perf_counter()
    async with ModbusDriver(devices(ports, units), stream) as driver:
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


# --- the orchestrator -------------------------------------------------------------------------


def report(name: str, r: dict[str, Any]) -> None:
    print(
        f"{name:9} {r['tags']:>10,} tags in {r['seconds']:5.1f} s  {r['tags_per_s']:>10,.0f} tags/s"
        f"  {r['cpu_per_100k']:6.2f} CPU s/100k tags  peak RSS {r['peak_rss_mb']:6.1f} MB"
    )


def run_role(role: str, payload: dict[str, Any]) -> None:
    """One of the child processes; measurements go to stdout as one JSON line."""
    if role == "sim":
        asyncio.run(serve([tuple(e) for e in payload["endpoints"]]))
        return
    ports = {int(k): v for k, v in payload.get("ports", {}).items()}
    if role == "driver":
        result = asyncio.run(run_driver(ports, payload["units"], payload["seconds"]))
    elif role == "scheduled":
        result = asyncio.run(run_scheduled(ports, payload["units"], payload["seconds"]))
    else:
        result = asyncio.run(run_baseline(payload["plan"], payload["seconds"]))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sims", type=int, default=2, help="simulator processes")
    parser.add_argument(
        "--role", choices=["sim", "driver", "scheduled", "baseline"], help=argparse.SUPPRESS
    )
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role is not None:
        run_role(args.role, json.loads(Path(args.payload).read_text()))
        return

    units = layout(args.tags)
    endpoints = list(enumerate(units))
    sims = []
    ports: dict[int, int] = {}
    files = []
    try:
        for i in range(args.sims):
            share = endpoints[i :: args.sims]
            if not share:
                continue
            f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
            json.dump({"endpoints": share}, f)
            f.close()
            files.append(f.name)
            proc = subprocess.Popen(
                [sys.executable, __file__, "--role", "sim", "--payload", f.name],
                stdout=subprocess.PIPE,
                text=True,
            )
            sims.append(proc)
        for proc in sims:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            ports.update(dict(json.loads(line)))
        print(
            f"{sum(units):,} simulated machines on {len(units)} endpoints in {len(sims)} "
            f"simulator processes; {os.cpu_count()} CPUs"
        )
        common = {"ports": ports, "units": units, "seconds": args.seconds}
        driver = in_child(__file__, "driver", common)
        print(
            f"{driver['configured_tags']:,} tags configured, read with "
            f"{driver['requests_per_poll']:,} requests per pass; {driver['good']:,} Good samples"
        )
        baseline = in_child(__file__, "baseline", {"plan": driver["plan"], "seconds": args.seconds})
        scheduled = in_child(__file__, "scheduled", common)
        report("driver", driver)
        report("pymodbus", baseline)
        report("scheduled", scheduled)
        print(
            f"scheduled: every group at 1 s; {scheduled['polls']:,} group polls, "
            f"{scheduled['overruns']:,} missed ticks, max lag {scheduled['max_lag']:.1f} s"
        )
        print(
            f"ratio driver/pymodbus: {driver['tags_per_s'] / baseline['tags_per_s']:.2f}× tags/s, "
            f"{driver['cpu_per_100k'] / baseline['cpu_per_100k']:.2f}× CPU per tag"
        )
    finally:
        for proc in sims:
            proc.terminate()
            proc.wait(10)
        for name in files:
            os.unlink(name)


if __name__ == "__main__":
    main()
