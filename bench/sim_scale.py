"""Start-up time and memory of the simulators serving a big factory: prints figures only.

    .venv/bin/python bench/sim_scale.py [-c configs/factory.scale.yaml] [--reads 2000]

Runs ``guantong sim run -c FILE`` as a process and reports: the tags it serves, the seconds
until it says it is serving (process start included), its resident memory then, the rate at
which one client per endpoint reads the first status block of random units, and the memory
after those reads (each machine read once builds its daily state pattern).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _bench import Figures, add_json_option  # noqa: E402

import simulators  # noqa: E402 - after the path set-up above


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def read_units(factory: simulators.FactoryConfig, reads: int) -> tuple[int, float]:
    """Read hr:0..2 of random units, one client per endpoint in parallel."""
    units: dict[str, list[int]] = {}
    for machine in factory.machines():
        units.setdefault(machine.endpoint, []).append(machine.unit_id or 0)
    rng = random.Random(1)  # noqa: S311 - picking units, not secrets
    per_endpoint = max(reads // len(units), 1)

    async def one(endpoint: simulators._factory.ModbusTcpEndpoint, ids: list[int]) -> int:
        client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=5, retries=0)
        await client.connect()
        done = 0
        try:
            for _ in range(per_endpoint):
                unit = rng.choice(ids)
                response = await client.read_holding_registers(0, count=1, device_id=unit)
                done += not response.isError()
        finally:
            client.close()
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(
        *(one(factory.endpoint(name), ids) for name, ids in units.items())  # type: ignore[arg-type]
    )
    return sum(counts), time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(ROOT / "configs" / "factory.scale.yaml"))
    parser.add_argument("--reads", type=int, default=2000)
    add_json_option(parser)
    args = parser.parse_args()
    factory = simulators.load_factory(args.config)
    tags = sum(len(simulators.profile(m.profile).tags) for m in factory.machines())
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", "sim", "run", "-c", args.config,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        while not (line := (await process.stderr.readline()).decode()).startswith("serving"):
            if not line:
                raise SystemExit("the simulator stopped before serving")
        ready = time.perf_counter() - started
        rss_ready = rss_mib(process.pid)
        done, took = await read_units(factory, args.reads)
        rss_after = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()
    print(f"factory            {args.config}")
    print(f"machines           {len(factory.machines())} on {len(factory.endpoints)} endpoints")
    print(f"tags served        {tags}")
    print(f"start-up           {ready:.2f} s (process start to 'serving')")
    print(f"RSS when serving   {rss_ready:.0f} MiB")
    print(f"reads              {done} in {took:.2f} s = {done / took:.0f} req/s, one client each")
    print(f"RSS after reads    {rss_after:.0f} MiB")
    out = Figures("sim_scale")
    out.add("tags", "tags served", tags, "tags")
    out.add("startup", "start-up, process start to serving", ready, "s")
    out.add("rss_serving", "RSS when serving", rss_ready, "MiB")
    out.add("reads", "reads, one client per endpoint", done / took, "req/s")
    out.add("rss_after", "RSS after the reads", rss_after, "MiB")
    out.write(args.json)


if __name__ == "__main__":
    asyncio.run(main())
