"""The demo on its embedded MQTT broker (amqtt) against the same demo on Mosquitto: prints
figures only.

    .venv/bin/python bench/demo_broker_bench.py [--sizes 7,50,100] [--seconds 30] [--json FILE]

For each factory size, runs ``guantong demo --broker B --size N --duration S`` for both brokers,
each in a fresh work directory (its own PostgreSQL cluster, made by ``initdb`` as on a first
start), and prints: seconds to "ready" and to the first committed rows (from the demo's start,
as it says them), the samples/s read and committed (mean of the status lines after the first
rows), the broker process's CPU (% of one core over the same span), the largest outbox depth
seen, what the store holds at the end and the connectivity events (a gap means envelopes the
broker lost). Mosquitto is the baseline: the ratio is embedded / Mosquitto.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _bench import Figures, add_json_option, cpu_seconds

STATUS = re.compile(
    r"read +(\d+) samples/s \| committed +(\d+) samples/s \((\d+) rows, (\d+) quarantined\) "
    r"\| devices (\d+)/(\d+) \| outbox (\d+)"
)
SUMMARY = re.compile(r"stored (\d+) samples in (\d+) envelopes from (\d+) devices; "
                     r"(\d+) quarantined, (\d+) connectivity events")  # fmt: skip


@dataclass
class Run:
    ready: float = float("nan")
    first_rows: float = float("nan")
    read: float = 0.0
    committed: float = 0.0
    broker_cpu: float = float("nan")
    outbox_max: int = 0
    devices: str = ""
    summary: str = ""
    events: int = -1


def run(broker: str, size: int, seconds: float) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="guantong-demo-bench-"))
    workdir.chmod(0o755)  # as root, the demo's PostgreSQL runs as 'postgres'
    demo_dir = workdir / "demo"
    argv = [sys.executable, "-m", "guantong", "demo", "--workdir", str(demo_dir),
            "--broker", broker, "--size", str(size), "--duration", str(seconds)]  # fmt: skip
    result, reads, commits = Run(), [], []
    pid, cpu_from, at_from, cpu_to, at_to = None, 0.0, 0.0, 0.0, 0.0
    pidfile = demo_dir / ("amqtt.pid" if broker == "embedded" else "mosquitto.pid")
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # a demo that does not stop (it happened once, under load) must not hold the bench
        watchdog = threading.Timer(seconds + 300, proc.kill)
        watchdog.start()
        assert proc.stderr is not None
        assert proc.stdout is not None
        for line in proc.stderr:
            if found := re.search(r"ready in ([\d.]+) s", line):
                result.ready = float(found[1])
            elif found := re.search(r"first samples committed ([\d.]+) s", line):
                result.first_rows = float(found[1])
                pid = int(pidfile.read_text(encoding="utf-8"))
                cpu_from, at_from = cpu_seconds(pid), time.monotonic()
            elif (found := STATUS.search(line)) and pid is not None:
                reads.append(int(found[1]))
                commits.append(int(found[2]))
                result.outbox_max = max(result.outbox_max, int(found[7]))
                result.devices = f"{found[5]}/{found[6]}"
                with contextlib.suppress(OSError):  # stopping
                    cpu_to, at_to = cpu_seconds(pid), time.monotonic()
        out = proc.stdout.read()
        proc.wait(timeout=60)
        watchdog.cancel()
        if proc.returncode != 0:
            raise SystemExit(f"the demo failed ({proc.returncode})")
        if found := SUMMARY.search(out):
            result.summary = f"{found[1]} samples, {found[2]} envelopes"
            result.events = int(found[5])
        if reads:
            result.read, result.committed = sum(reads) / len(reads), sum(commits) / len(commits)
        if at_to > at_from:
            result.broker_cpu = 100 * (cpu_to - cpu_from) / (at_to - at_from)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="7,50,100", help="machines, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="each run, once ready")
    add_json_option(parser)
    args = parser.parse_args()
    out = Figures("demo_broker")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.seconds:.0f} s per run")  # fmt: skip
    print(
        f"{'size':>4} {'broker':>9} {'ready s':>7} {'rows s':>6} {'read/s':>7} "
        f"{'commit/s':>8} {'broker %':>8} {'outbox':>6} {'devices':>7} events  store"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        runs = {}
        for broker in ("mosquitto", "embedded"):
            r = runs[broker] = run(broker, size, args.seconds)
            print(f"{size:>4} {broker:>9} {r.ready:7.1f} {r.first_rows:6.1f} {r.read:7.0f} "
                  f"{r.committed:8.0f} {r.broker_cpu:8.1f} {r.outbox_max:6d} {r.devices:>7} "
                  f"{r.events:6d}  {r.summary}", flush=True)  # fmt: skip
        base, emb = runs["mosquitto"], runs["embedded"]
        out.add(f"ready_{size}", f"{size} machines: seconds to ready, embedded broker",
                emb.ready, "s", base.ready, "Mosquitto")  # fmt: skip
        out.add(f"first_rows_{size}", f"{size} machines: seconds to the first rows, embedded",
                emb.first_rows, "s", base.first_rows, "Mosquitto")  # fmt: skip
        out.add(f"committed_{size}", f"{size} machines: samples/s committed, embedded",
                emb.committed, "samples/s", base.committed, "Mosquitto")  # fmt: skip
        out.add(f"broker_cpu_{size}", f"{size} machines: broker CPU, embedded",
                emb.broker_cpu, "% of a core", base.broker_cpu, "Mosquitto")  # fmt: skip
        out.add(f"events_{size}", f"{size} machines: connectivity events, embedded",
                emb.events, "events")  # fmt: skip
        ratio = emb.committed / base.committed if base.committed else float("nan")
        print(f"{size:>4} ratio embedded/mosquitto: committed samples/s {ratio:.2f}, "
              f"ready {emb.ready - base.ready:+.1f} s, broker CPU "
              f"{emb.broker_cpu / base.broker_cpu if base.broker_cpu else float('nan'):.1f}x; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    out.write(args.json)


if __name__ == "__main__":
    main()
