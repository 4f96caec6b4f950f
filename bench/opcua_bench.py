"""OPC UA subscriptions at scale: prints figures, asserts nothing.

    .venv/bin/python bench/opcua_bench.py [--items 20000] [--seconds 30] [--sims 2]

Simulator processes serve machines of every profile over OPC UA, values changing every second
(each process one asyncua server: one saturates a core near 50,000 value writes a second, see
FINDINGS). Then, each in a fresh process so that its CPU time and peak RSS are its own:

- the **driver**: ``OpcUaDriver`` in subscribe mode, one device per server, one 1 s group of
  all its tags spread over subscriptions of 1,000 items, samples taken from its SampleStream;
- the **baseline**: a plain asyncua client, one subscription per 1,000 items on the same
  nodes at the same 1 s, notifications handled in asyncua's usual handler callback.

Both subscribe to every tag, including setpoints that never change (they report once). For
every window of ``--window`` seconds after a warm-up it prints notifications/s, the lag of
each sample when the consumer gets it (now − SourceTimestamp, which the simulator sets to the
whole second the value belongs to, so up to one publishing interval of it is by design) at
p50 and p99, and the client's CPU share; then the client's peak RSS. A lag that grows from
window to window means the client falls behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _bench import Figures, add_json_option, cpu_seconds, in_child, spawn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 7
FACTORY = "Bench"
ITEMS_PER_SUBSCRIPTION = 1000


def machines_for(endpoint: int, items: int) -> list[tuple[str, str]]:
    """(machine, profile) pairs holding about ``items`` tags, profiles in turn."""
    from simulators import PROFILES  # noqa: PLC0415

    names = sorted(PROFILES)
    out: list[tuple[str, str]] = []
    total = 0
    while total < items:
        prof = names[len(out) % len(names)]
        out.append((f"m{endpoint}-{len(out)}", prof))
        total += len(PROFILES[prof].tags)
    return out


def node_ids(endpoint: int, items: int) -> list[str]:
    from simulators import PROFILES  # noqa: PLC0415

    return [
        f"ns=2;s={FACTORY}/L{endpoint}/{name}/{spec.name}"
        for name, prof in machines_for(endpoint, items)
        for spec in PROFILES[prof].tags
    ]


# --- roles, each run in its own process ----------------------------------------------------------


async def serve(endpoint: int, items: int) -> None:
    """One OPC UA server; print its URL as one JSON line, then serve until killed."""
    from simulators import Machine, OpcUaEndpoint  # noqa: PLC0415

    machines = [
        Machine(name, prof, SEED, line=f"L{endpoint}")
        for name, prof in machines_for(endpoint, items)
    ]
    async with OpcUaEndpoint(f"bench{endpoint}", FACTORY, machines) as server:
        print(json.dumps({"url": server.url}), flush=True)
        await asyncio.Event().wait()


class Meter:
    """Per-window counts and lags of the samples a client receives."""

    def __init__(self, warmup: float, window: float) -> None:
        self.started = time.monotonic()
        self.warmup = warmup
        self.window = window
        self.windows: list[dict[str, Any]] = []
        self._lags: list[float] = []
        self._count = 0
        self._opened = self.started + warmup
        self._cpu = time.process_time()

    def add(self, source_ns: int | None, now_ns: int) -> None:
        if source_ns is not None:
            self._lags.append((now_ns - source_ns) / 1e9)
        self._count += 1

    def tick(self) -> None:
        """Close the window if it is over; forget what came during the warm-up."""
        now = time.monotonic()
        if now < self._opened:
            self._lags.clear()
            self._count = 0
            self._cpu = time.process_time()
            return
        elapsed = now - self._opened
        if elapsed < self.window:
            return
        cpu = time.process_time()
        lags = sorted(self._lags)
        self.windows.append(
            {
                "t": round(now - self.started, 1),
                "per_s": self._count / elapsed,
                "p50": lags[len(lags) // 2] if lags else float("nan"),
                "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan"),
                "cpu": (cpu - self._cpu) / elapsed,
            }
        )
        self._lags.clear()
        self._count = 0
        self._cpu = cpu
        self._opened = now

    def result(self, subscribed_in: float) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "subscribed_in": subscribed_in,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


async def run_driver(urls: list[str], items: list[int], args: dict[str, Any]) -> dict[str, Any]:
    from edge import Batch, Device, SampleStream  # noqa: PLC0415
    from edge.drivers.opcua import OpcUaDriver  # noqa: PLC0415

    devices = [
        Device.model_validate(
            {
                "name": f"server{i}",
                "id": f"88.709.911/dev.server{i}",
                "connection": {
                    "protocol": "opcua",
                    "endpoint": url,
                    "mode": "subscribe",
                    "items_per_subscription": ITEMS_PER_SUBSCRIPTION,
                    "timeout": 10,
                    "watchdog": 10,
                },
                "groups": [
                    {
                        "name": "all",
                        "interval": "1s",
                        "tags": [
                            {"name": f"t{n}", "address": node, "type": "float64"}
                            for n, node in enumerate(node_ids(i, count))
                        ],
                    }
                ],
            }
        )
        for i, (url, count) in enumerate(zip(urls, items, strict=True))
    ]
    stream = SampleStream()
    began = time.perf_counter()
    async with OpcUaDriver(devices, stream) as driver:
        for reader in driver.readers:
            await reader.settled.wait()
        subscribed_in = time.perf_counter() - began
        meter = Meter(args["warmup"], args["window"])
        end = meter.started + args["warmup"] + args["seconds"] + 0.3
        while time.monotonic() < end:
            try:
                item = await asyncio.wait_for(stream.get(), 0.2)
            except TimeoutError:
                meter.tick()
                continue
            if isinstance(item, Batch):
                now = time.time_ns()
                for sample in item.samples:
                    meter.add(sample.source_ts, now)
            meter.tick()
        result = meter.result(subscribed_in)
        result["monitored_items"] = sum(
            r.session.monitored_items for r in driver.readers if r.session is not None
        )
        result["subscriptions"] = sum(
            len(r.session.subscriptions) for r in driver.readers if r.session is not None
        )
    return result


async def run_baseline(urls: list[str], items: list[int], args: dict[str, Any]) -> dict[str, Any]:
    from asyncua import Client  # noqa: PLC0415

    from edge.drivers.opcua.convert import timestamp_ns  # noqa: PLC0415 - the same clock maths

    meter: Meter | None = None

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if meter is not None:
                stamp = data.monitored_item.Value.SourceTimestamp
                meter.add(timestamp_ns(stamp), time.time_ns())

    began = time.perf_counter()
    clients = []
    handles = 0
    subscriptions = 0
    for i, (url, count) in enumerate(zip(urls, items, strict=True)):
        client = Client(url, timeout=10, watchdog_intervall=10)
        await client.connect()
        clients.append(client)
        nodes = [client.get_node(n) for n in node_ids(i, count)]
        for start in range(0, len(nodes), ITEMS_PER_SUBSCRIPTION):
            sub = await client.create_subscription(1000, Handler())
            subscriptions += 1
            results = await sub.subscribe_data_change(
                nodes[start : start + ITEMS_PER_SUBSCRIPTION], queuesize=1, sampling_interval=1000
            )
            handles += sum(1 for r in results if isinstance(r, int))
    subscribed_in = time.perf_counter() - began
    meter = Meter(args["warmup"], args["window"])
    end = meter.started + args["warmup"] + args["seconds"] + 0.3
    while time.monotonic() < end:
        await asyncio.sleep(0.2)
        meter.tick()
    result = meter.result(subscribed_in)
    result["monitored_items"] = handles
    result["subscriptions"] = subscriptions
    for client in clients:
        await client.disconnect()
    return result


# --- the orchestrator -------------------------------------------------------------------------


def measured(
    role: str, payload: dict[str, Any], sims: list[subprocess.Popen[str]]
) -> dict[str, Any]:
    """Run one client and print its figures with the simulators' CPU share meanwhile: when
    they are near a core each, they, not the client, set the rate and the lag."""
    before = [cpu_seconds(p.pid) for p in sims]
    started = time.perf_counter()
    result = in_child(__file__, role, payload)
    elapsed = time.perf_counter() - started
    shares = [(cpu_seconds(p.pid) - b) / elapsed for p, b in zip(sims, before, strict=True)]
    report(
        "driver (OpcUaDriver, subscribe mode)" if role == "driver" else "baseline (plain asyncua)",
        result,
    )
    print("  simulator CPU meanwhile: " + ", ".join(f"{s * 100:.0f}%" for s in shares))
    result["simulator_cpu"] = shares
    return result


def figures(driver: dict[str, Any], baseline: dict[str, Any], served: int) -> Figures:
    """The driver's figures next to plain asyncua's; the lag's growth is the p99 of the last
    window minus that of the first (positive: the client falls behind)."""
    out = Figures("opcua")

    def over(r: dict[str, Any], key: str, pick: Any) -> float:
        values = [w[key] for w in r["windows"]]
        return float(pick(values)) if values else float("nan")

    base = "plain asyncua client, same nodes"
    out.add("items", "monitored items (driver)", driver["monitored_items"], "items",
            served, "variables served")  # fmt: skip
    out.add("notifications", "notifications/s, mean of the windows",
            over(driver, "per_s", statistics.fmean), "1/s",
            over(baseline, "per_s", statistics.fmean), base)  # fmt: skip
    out.add("lag_p99_max", "lag p99, worst window", over(driver, "p99", max), "s",
            over(baseline, "p99", max), base)  # fmt: skip
    windows = driver["windows"]
    growth = windows[-1]["p99"] - windows[0]["p99"] if windows else float("nan")
    out.add("lag_p99_growth", "lag p99, last window minus first", growth, "s")
    out.add("cpu", "driver CPU share, mean of the windows", over(driver, "cpu", statistics.fmean),
            "CPU s/s", over(baseline, "cpu", statistics.fmean), base)  # fmt: skip
    out.add("peak_rss", "driver peak RSS", driver["peak_rss_mb"], "MB",
            baseline["peak_rss_mb"], base)  # fmt: skip
    out.add("subscribed_in", "time to subscribe every item", driver["subscribed_in"], "s",
            baseline["subscribed_in"], base)  # fmt: skip
    shares = driver["simulator_cpu"]
    out.note("simulator CPU during the driver's run: " + ", ".join(f"{x:.0%}" for x in shares))
    return out


def report(name: str, r: dict[str, Any]) -> None:
    print(
        f"\n{name}: {r['monitored_items']:,} monitored items in {r['subscriptions']} "
        f"subscriptions, subscribed in {r['subscribed_in']:.1f} s; peak RSS "
        f"{r['peak_rss_mb']:.0f} MB"
    )
    print(f"  {'t (s)':>6} {'notif/s':>9} {'lag p50':>8} {'lag p99':>8} {'CPU':>6}")
    for w in r["windows"]:
        print(
            f"  {w['t']:6.1f} {w['per_s']:9,.0f} {w['p50']:7.3f}s {w['p99']:7.3f}s "
            f"{w['cpu'] * 100:5.0f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--sims", type=int, default=2, help="simulator processes")
    parser.add_argument("--role", choices=["sim", "driver", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()

    if args.role is not None:
        payload = json.loads(Path(args.payload).read_text())
        if args.role == "sim":
            asyncio.run(serve(payload["endpoint"], payload["items"]))
            return
        run = run_driver if args.role == "driver" else run_baseline
        print(json.dumps(asyncio.run(run(payload["urls"], payload["items"], payload))))
        return

    share, extra = divmod(args.items, args.sims)
    items = [share + (i < extra) for i in range(args.sims)]
    sims: list[subprocess.Popen[str]] = []
    files = []
    urls = []
    started = time.perf_counter()
    try:
        for endpoint, count in enumerate(items):
            sims.append(spawn(__file__, "sim", {"endpoint": endpoint, "items": count}, files))
        for proc in sims:
            assert proc.stdout is not None
            urls.append(json.loads(proc.stdout.readline())["url"])
        served = [len(node_ids(i, n)) for i, n in enumerate(items)]
        print(
            f"{sum(served):,} OPC UA variables changing every second, on {len(sims)} simulator "
            f"processes (started in {time.perf_counter() - started:.1f} s); {os.cpu_count()} CPUs"
        )
        common = {
            "urls": urls, "items": items, "seconds": args.seconds, "warmup": args.warmup,
            "window": args.window,
        }  # fmt: skip
        driver = measured("driver", common, sims)
        baseline = measured("baseline", common, sims)
        figures(driver, baseline, sum(served)).write(args.json)
    finally:
        for proc in sims:
            proc.terminate()
            proc.wait(10)
        for name in files:
            os.unlink(name)


if __name__ == "__main__":
    main()
