"""Identifier resolution through the client, with and without its cache: prints, asserts nothing.

    .venv/bin/python bench/identifiers_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--seconds 3] [--handles 1000] [--concurrency 1 16]

Creates a scratch database, runs ``guantong identifiers serve`` as its own process (so server
and client do not share a core's event loop), registers device records through the batch API,
then resolves random handles for a few seconds per setting and prints resolutions/s, latency
percentiles and the share of resolutions that went to the node ("to node": all of them without
the cache; with it, the cache is warmed first, as in an ingest that has met every gateway, so
the figure is the cost of a hit). The database and the server process are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from _bench import Figures, add_json_option

import identifiers


async def start_node(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", "identifiers", "serve", "-c", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    if not line.startswith("serving "):
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"node did not start: {line}")
    return proc, line.split()[-1]


async def measure(
    url: str, handles: list[str], *, cache: bool, seconds: float, concurrency: int
) -> tuple[float, list[float], float]:
    """(resolutions/s, latencies, share of resolutions the node answered) of one setting."""
    latencies: list[float] = []
    async with identifiers.Client(url, cache=cache) as client:
        if cache:  # warm: what ingest sees once it has met every gateway
            for handle in handles:
                await client.resolve(handle)
        asked_before = client.stats.misses
        deadline = time.perf_counter() + seconds

        async def worker(seed: int) -> None:
            rng = random.Random(seed)  # noqa: S311 - picks handles, not secrets
            while time.perf_counter() < deadline:
                handle = rng.choice(handles)
                start = time.perf_counter()
                await client.resolve(handle)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - start
        asked = client.stats.misses - asked_before
    return len(latencies) / elapsed, latencies, asked / len(latencies)


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1] * 1e3


async def main(args: argparse.Namespace) -> None:
    name = f"bench_ids_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.dsn.rpartition("/")
    dsn = f"{base}/{name}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "node.yaml"
            config.write_text(
                "kind: identifiers\nlisten: {host: 127.0.0.1, port: 0}\n"
                f"database: {{dsn: '{dsn}', pool_max: 8}}\nauthoritative: ['88.709']\n"
            )
            proc, url = await start_node(config)
            try:
                async with identifiers.Registry(dsn) as registry:
                    _, token = await registry.create_token("88.709.911", days=1)
                handles = [f"88.709.911/dev.{i:06d}" for i in range(args.handles)]
                device = identifiers.DeviceRecord(
                    enterprise="88.709.911/firm", gateway="88.709.911/gw.1",
                    manufacturer="Siemens", model="S7-1200", serial="K1",
                    location="workshop 2", stages=("设备管理", "能耗管理"),
                )  # fmt: skip
                async with identifiers.Client(url, token=token) as writer:
                    start = time.perf_counter()
                    await writer.register([(h, device.to_values()) for h in handles])
                    took = time.perf_counter() - start
                print(f"registered {len(handles)} records via batch in {took:.2f} s "
                      f"({len(handles) / took:.0f} records/s)")  # fmt: skip
                print(f"{'cache':>6} {'conc':>5} {'resolutions/s':>14} {'p50 ms':>8} "
                      f"{'p99 ms':>8} {'max ms':>8} {'to node':>8}")  # fmt: skip
                out = Figures("identifiers")
                baseline: dict[int, tuple[float, str]] = {}
                for cache in (False, True):
                    for concurrency in args.concurrency:
                        rate, lat, asked = await measure(
                            url, handles, cache=cache, seconds=args.seconds,
                            concurrency=concurrency,
                        )  # fmt: skip
                        print(f"{'on' if cache else 'off':>6} {concurrency:>5} {rate:>14.0f} "
                              f"{pct(lat, 50):>8.3f} {pct(lat, 99):>8.3f} "
                              f"{max(lat) * 1e3:>8.3f} {asked:>8.1%}")  # fmt: skip
                        cached = "cache" if cache else "nocache"
                        label = f"cache {'on' if cache else 'off'}, {concurrency} caller(s)"
                        out.add(f"{cached}_c{concurrency}_rate", f"resolutions/s, {label}",
                                rate, "1/s", *baseline.get(concurrency, (None, None)))  # fmt: skip
                        out.add(f"{cached}_c{concurrency}_p99", f"latency p99, {label}",
                                pct(lat, 99) / 1e3, "s")  # fmt: skip
                        baseline.setdefault(concurrency, (rate, "the same without cache"))
                out.write(args.json)
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--handles", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    add_json_option(parser)
    asyncio.run(main(parser.parse_args()))
