"""Ingest throughput and latency: prints figures, asserts nothing.

    .venv/bin/python bench/ingest_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--samples 1000000] [--rates 10000,100000] [--seconds 5] [--decode-workers 0,1]
        [--repeat 3]

Makes a throwaway database on the server of ``--dsn``, starts its own Mosquitto on a free
127.0.0.1 port and an identifier node in-process, registers one gateway with 10 devices of
50 tags, then measures in the same run, into the same schema:

- **raw COPY**: the rows that ``--samples`` samples become, written by psycopg binary COPY in
  transactions of 20,000 rows (ingest's default batch), prepared beforehand: the ceiling;
- **ingest**: the same samples as signed envelopes of 500 samples, published while ingest is
  away (the broker keeps them in its session), then ingest started and timed until the last
  row is committed: MQTT receive, decode, verify, chain, COPY, rollup, acknowledgement; timed
  from the start (with starting ingest and its decode workers) and from the first commit,
  both printed (starting ingest takes ≈0.2–0.3 s: process pool, identifier and series
  look-ups, the MQTT session; the default 1,000,000 samples, ≈3 s of ingest, keep that to
  a tenth of the figure from start, where 400,000 made it a fifth), with the CPU time each
  process (ingest, its decode workers, the PostgreSQL backend writing the batches,
  Mosquitto) spends per sample, read from /proc;
- **latency**: a publisher process signs and sends envelopes at each of ``--rates`` samples/s
  for ``--seconds``, stamping samples with the send time; p50/p99 of (commit − sample time).

Raw COPY and ingest take turns ``--repeat`` times, each ingest compared with the raw COPY
just before it, and the medians of the ratios are printed: on a shared machine the load
drifts between rounds. Ingest runs in this process (as ``guantong ingest run`` would: one
process); the publisher runs in another, so that it does not compete for this process's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _bench import Figures, add_json_option, registered_node, start_mosquitto

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import (  # noqa: E402
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

FIRM = "88.709.911"
GATEWAY = f"{FIRM}/gw.bench"
DEVICES = [f"{FIRM}/dev.m{i:02d}" for i in range(10)]
TAGS = [f"t{i:02d}" for i in range(50)]
PER_ENVELOPE = 500  # 50 tags x 10 polls
BATCH_ROWS = 20_000


def envelopes(  # noqa: PLR0917
    key: Any, first_seq: int, prev: bytes, count: int, start_us: int, step_us: int
):
    """``count`` signed envelopes of 500 samples, polls ``step_us`` apart from ``start_us``."""
    import gateway.protocol as p  # noqa: PLC0415

    rnd = random.Random(  # noqa: S311 - sample values, not secrets
        first_seq
    )
    out = []
    ts = start_us
    for n in range(count):
        samples = []
        for _ in range(PER_ENVELOPE // len(TAGS)):
            samples += [p.Sample(tag, ts, round(rnd.uniform(0, 1000), 3)) for tag in TAGS]
            ts += step_us
        env = p.Envelope(
            GATEWAY, first_seq + n, prev, ts, DEVICES[n % len(DEVICES)], tuple(samples)
        )
        prev = env.digest
        out.append((p.envelope_topic(env), p.encode_json(p.sign(env, key))))
    return out, prev


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    import paho.mqtt.client as mqtt  # noqa: PLC0415

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}"
    )
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(t, pl, qos=1) for t, pl in messages]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def paced_publisher(  # noqa: PLR0917 - a Process target takes positional args
    port: int, key_pem: bytes, first_seq: int, prev: bytes, rate: int,
                    seconds: float, done: Any) -> None:  # fmt: skip
    """Child process: envelopes at ``rate`` samples/s, each sample stamped with its send time."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: PLC0415

    import gateway.protocol as p  # noqa: PLC0415

    key = load_pem_private_key(key_pem, None)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pace-{uuid.uuid4().hex[:6]}")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    per_second = rate / PER_ENVELOPE
    start = time.monotonic()
    seq, sent, infos = first_seq, 0, []
    rnd = random.Random(  # noqa: S311 - sample values, not secrets
        rate
    )
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * per_second) + 1
        while sent < due:
            now = time.time_ns() // 1000
            samples = tuple(
                p.Sample(tag, now + i, round(rnd.uniform(0, 1000), 3))
                for i in range(PER_ENVELOPE // len(TAGS)) for tag in TAGS
            )  # fmt: skip
            env = p.Envelope(GATEWAY, seq, prev, now, DEVICES[seq % len(DEVICES)], samples)
            infos.append(
                client.publish(p.envelope_topic(env), p.encode_json(p.sign(env, key)), qos=1)
            )
            prev, seq, sent = env.digest, seq + 1, sent + 1
        time.sleep(0.002)
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    done.send((seq, prev, sent, time.monotonic() - start))


Task = tuple[int, int | None]  # a process, or one of its threads


def cpu_seconds(tasks: list[Task]) -> float:
    """CPU time (user + system) processes (all their threads) or threads have used so far."""
    total = 0
    for pid, tid in tasks:
        path = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
        try:
            fields = path.read_text(encoding="ascii").rpartition(")")[2].split()
        except FileNotFoundError:  # a thread that ended
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def thread_role(thread: threading.Thread) -> str:
    if thread is threading.main_thread():
        return "event loop"
    if thread.name.startswith("paho"):
        return "MQTT"
    if thread.name.startswith("asyncio"):
        return "database"  # asyncio.to_thread: batch writes and lookups
    return "other"


def cpu_tasks(ingest: Any, broker_pid: int) -> dict[str, list[Task]]:
    """The processes that share the cores while ingest runs, and ingest's threads, by role."""
    me = os.getpid()
    tasks: dict[str, list[Task]] = {"ingest": [(me, None)]}
    for thread in threading.enumerate():
        tasks.setdefault(f"ingest/{thread_role(thread)}", []).append((me, thread.native_id))
    pool = ingest._pool  # a benchmark looks inside
    for n, pid in enumerate(sorted(pool._processes) if pool else []):
        tasks[f"decode worker {n + 1}"] = [(pid, None)]
    tasks["PostgreSQL writer"] = [(ingest.store.writer.info.backend_pid, None)]
    tasks["Mosquitto"] = [(broker_pid, None)]
    return tasks


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class Run:
    rate: float  # samples/s from starting ingest to the last commit
    seconds: float
    steady: float  # samples/s from the first commit to the last
    cpu: dict[str, float]  # role → CPU µs per sample after the first commit
    #: CPU µs per sample of the ingest process (all its threads) from start to the last commit
    cpu_from_start: float


async def ingest_backlog(
    config: Any, port: int, backlog: list[tuple[str, bytes]], samples: int, broker_pid: int
) -> Run:
    """Publish ``backlog`` while ingest is away, then time ingest working it off."""
    from ingest import Ingest  # noqa: PLC0415

    with psycopg.connect(config.database.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE sample, sample_1m, receipt, connectivity_event")
    async with Ingest(config) as ingest:  # makes the session, then goes away
        while not ingest.consumer.stats.connected:  # noqa: ASYNC110 - polling a flag
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    await asyncio.to_thread(publish_all, port, backlog)
    me = [(os.getpid(), None)]
    cpu_started = cpu_seconds(me)
    started = time.perf_counter()
    async with Ingest(config) as ingest:
        while ingest.stats.batches < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        first_at, first_rows = time.perf_counter(), ingest.stats.rows
        tasks = cpu_tasks(ingest, broker_pid)
        cpu_first = {role: cpu_seconds(task) for role, task in tasks.items()}
        while ingest.stats.rows < samples:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        done = time.perf_counter()
        cpu = {role: cpu_seconds(task) - cpu_first[role] for role, task in tasks.items()}
        cpu_all = cpu_seconds(me) - cpu_started
    steady_samples = samples - first_rows
    return Run(
        samples / (done - started),
        done - started,
        steady_samples / (done - first_at),
        {role: seconds / steady_samples * 1e6 for role, seconds in cpu.items()},
        cpu_all / samples * 1e6,
    )


def copy_baseline(dsn: str, rows: list[tuple]) -> tuple[float, dict[str, float]]:
    """Seconds to COPY ``rows`` into the empty table in transactions of BATCH_ROWS, and the
    CPU µs per row of this process and of the PostgreSQL backend."""
    types = ["int4", "int8", "float8", "text", "int2"]
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE sample, sample_1m")
        conn.commit()
        tasks = {"client": [(os.getpid(), None)], "PostgreSQL": [(conn.info.backend_pid, None)]}
        cpu = {role: cpu_seconds(task) for role, task in tasks.items()}
        started = time.perf_counter()
        for i in range(0, len(rows), BATCH_ROWS):
            with (
                conn.transaction(),
                conn.cursor() as cur,
                cur.copy(
                    "COPY sample (series_id, ts, value, text_value, quality) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(types)
                for row in rows[i : i + BATCH_ROWS]:
                    copy.write_row(row)
        seconds = time.perf_counter() - started
        used = {role: cpu_seconds(task) - cpu[role] for role, task in tasks.items()}
    return seconds, {role: used[role] / len(rows) * 1e6 for role in tasks}


async def bench(  # noqa: PLR0915
    args: argparse.Namespace, dsn: str, port: int, broker_pid: int, out: Figures
) -> None:
    from ingest import Ingest, IngestConfig, Store, migrate  # noqa: PLC0415

    migrate(dsn)
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    async with registered_node(dsn, f"{FIRM}/firm", {GATEWAY: (public, DEVICES)}) as node:
        # the rows of the baseline: the same series ids ingest will use
        store = Store(dsn)
        store.connect()
        firm = store.enterprise_id(f"{FIRM}/firm")
        gw = store.gateway_id(GATEWAY, firm)
        ids = [store.series_ids(store.device_id(d, firm, gw), TAGS) for d in DEVICES]
        store.close()

        envelope_count = args.samples // PER_ENVELOPE
        base_us = (time.time_ns() // 1000) - 600_000_000  # partitions exist for today
        made = time.perf_counter()
        backlog, prev = envelopes(key, 1, bytes(32), envelope_count, base_us, 1000)
        made = time.perf_counter() - made
        rows = []
        ts = base_us - 946_684_800_000_000
        rnd = random.Random(  # noqa: S311 - sample values, not secrets
            1
        )
        for n in range(envelope_count):
            series = ids[n % len(DEVICES)]
            for _ in range(PER_ENVELOPE // len(TAGS)):
                rows += [(series[t], ts, round(rnd.uniform(0, 1000), 3), None, 0) for t in TAGS]
                ts += 1000
        samples = len(rows)
        print(
            f"samples: {samples:,} in {envelope_count:,} envelopes of {PER_ENVELOPE} "
            f"(signing them took {made:.1f} s); load average {load()}"
        )
        ratios: dict[int, list[tuple[float, float]]] = {w: [] for w in args.decode_workers}
        rates: dict[int, list[tuple[float, float]]] = {w: [] for w in args.decode_workers}
        for _ in range(args.repeat):
            # the baseline again before each round: the machine's load drifts between rounds
            copy_seconds, copy_cpu = copy_baseline(dsn, rows)
            copy_rate = samples / copy_seconds
            print(f"{'raw binary COPY':<26}{copy_rate:>10,.0f} samples/s  ({copy_seconds:.2f} s)")
            used = ", ".join(f"{role} {us:.2f}" for role, us in copy_cpu.items())
            print(f"  CPU µs per sample: {used}")
            for workers in args.decode_workers:
                config = IngestConfig.model_validate({
                    "kind": "ingest", "database": {"dsn": dsn}, "identifiers": {"node": node.url},
                    "mqtt": {"broker": f"mqtt://127.0.0.1:{port}", "client_id": "bench-ingest"},
                    "batch": {"decode_workers": workers}, "health": None,
                })  # fmt: skip
                run = await ingest_backlog(config, port, backlog, samples, broker_pid)
                ratio = (run.rate / copy_rate, run.steady / copy_rate)
                ratios[workers].append(ratio)
                rates[workers].append((run.rate, copy_rate))
                print(
                    f"ingest, decode_workers={workers}  {run.rate:>10,.0f} samples/s  "
                    f"({run.seconds:.2f} s from start; {run.steady:,.0f}/s after the first "
                    f"commit; ratio to raw COPY {ratio[0]:.2f} from start, {ratio[1]:.2f} after "
                    "the first commit; target 0.70)"
                )
                threads = ", ".join(
                    f"{role.partition('/')[2]} {us:.2f}"
                    for role, us in run.cpu.items()
                    if "/" in role
                )
                per_sample = ", ".join(
                    f"{role} {us:.2f}" + (f" ({threads})" if role == "ingest" else "")
                    for role, us in run.cpu.items()
                    if "/" not in role
                )
                print(f"  CPU µs per sample after the first commit: {per_sample}")
                # from start too: work done before the first commit (the MQTT thread reading
                # the backlog ahead, look-ups) is missing from the figures above
                print(f"  CPU µs per sample from start, ingest process: {run.cpu_from_start:.2f}")
        for workers, pairs in ratios.items():
            print(
                f"median ratio, decode_workers={workers}: "
                f"{statistics.median(r for r, _ in pairs):.2f} from start, "
                f"{statistics.median(r for _, r in pairs):.2f} after the first commit "
                f"({len(pairs)} rounds; target 0.70); load average {load()}"
            )
            out.add(f"rate_w{workers}", f"ingest, decode_workers={workers}, median from start",
                    statistics.median(r for r, _ in rates[workers]), "samples/s",
                    statistics.median(c for _, c in rates[workers]),
                    "raw binary COPY of the same rows, median")  # fmt: skip
            out.add(f"ratio_w{workers}", f"ingest / raw COPY, decode_workers={workers}, median "
                    "from start", statistics.median(r for r, _ in pairs), "×")  # fmt: skip
            out.add(f"ratio_steady_w{workers}", f"ingest / raw COPY, decode_workers={workers}, "
                    "median after the first commit", statistics.median(r for _, r in pairs),
                    "×")  # fmt: skip
        del rows
        async with Ingest(config) as ingest:
            seq = envelope_count + 1
            pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            ctx = multiprocessing.get_context("spawn")
            for rate in args.rates:
                with psycopg.connect(dsn) as conn:
                    mark = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                before = ingest.verifier.stats.accepted
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=paced_publisher, args=(port, pem, seq, prev, rate, args.seconds, child)
                )
                proc.start()
                seq, prev, sent, took = await asyncio.to_thread(parent.recv)
                await asyncio.to_thread(proc.join)
                while ingest.verifier.stats.accepted < before + sent:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.5)
                with psycopg.connect(dsn) as conn:
                    p50, p99, n = conn.execute(
                        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY committed - created),"
                        " percentile_disc(0.99) WITHIN GROUP (ORDER BY committed - created),"
                        " count(*) FROM receipt WHERE received > %s",
                        (mark,),
                    ).fetchone()
                achieved = sent * PER_ENVELOPE / took
                print(
                    f"latency at {rate:>7,} samples/s (sent {achieved:,.0f}/s, {n} envelopes): "
                    f"p50 {p50.total_seconds() * 1000:.0f} ms, "
                    f"p99 {p99.total_seconds() * 1000:.0f} ms (sample time to commit; "
                    f"batch max_delay {config.batch.max_delay * 1000:.0f} ms)"
                )
                out.add(f"latency_p50_{rate}", f"latency p50 at {rate:,} samples/s, sample to "
                        "commit", p50.total_seconds(), "s")  # fmt: skip
                out.add(f"latency_p99_{rate}", f"latency p99 at {rate:,} samples/s, sample to "
                        "commit", p99.total_seconds(), "s")  # fmt: skip
                out.add(f"sent_{rate}", f"rate achieved by the publisher, asked {rate:,}/s",
                        achieved, "samples/s", rate, "asked")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--rates", default="10000,100000",
                        type=lambda s: [int(x) for x in s.split(",") if x])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of raw COPY then ingest; the medians are printed")  # fmt: skip
    parser.add_argument("--decode-workers", default="0,1",
                        type=lambda s: [int(x) for x in s.split(",") if x],
                        help="ingest runs for each; the latency runs use the last")  # fmt: skip
    add_json_option(parser)
    args = parser.parse_args()
    out = Figures("ingest")
    name = f"ingest_bench_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.dsn.rpartition("/")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    directory = Path(tempfile.mkdtemp(prefix="guantong-ingest-bench-"))
    broker, port = start_mosquitto(directory, ["max_queued_messages 0", "max_inflight_messages 0"])
    try:
        asyncio.run(bench(args, f"{base}/{name}", port, broker.pid, out))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    out.write(args.json)


if __name__ == "__main__":
    main()
