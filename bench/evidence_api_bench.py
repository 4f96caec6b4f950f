"""What the evidence page's requests cost: the API over a day of 1 Hz data; prints, asserts
nothing.

    .venv/bin/python bench/evidence_api_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--tags 5] [--seconds 3]

Creates a scratch database with the ingest schema and one device whose tags each hold 24 h of
1 Hz samples (and their 1-minute rollup, as ingest writes it), runs ``guantong evidence serve``
as its own process, and requests each endpoint the page polls for a few seconds, one request
at a time: ``/healthz`` (the baseline: routing and HTTP only, no token, no store), the newest
values of the device, and one tag's series over 10 min (raw), over 24 h in 2000 points (steps
of 44 s: raw, 86,400 rows) and in 1440 points (steps of 60 s: the rollup, 1,440 rows). Prints
requests/s, latency percentiles and the ratio of each p50 to the baseline's. The database and
the server are removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import yaml
from _bench import Figures, add_json_option, free_port

import evidence
from ingest import migrate
from ingest._schema import create_partitions

FIRM, DEVICE = "88.709.911/firm", "88.709.911/dev.kiln"


def fill(dsn: str, tags: int, end: dt.datetime) -> None:
    start = end - dt.timedelta(days=1)
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        day = int(start.timestamp() // 86400)
        create_partitions(conn, range(day, day + 3))
        conn.execute("INSERT INTO enterprise (identifier) VALUES (%s)", (FIRM,))
        conn.execute("INSERT INTO gateway (identifier, enterprise_id) VALUES ('88.709.911/gw', 1)")
        conn.execute(
            "INSERT INTO device (identifier, enterprise_id, gateway_id) VALUES (%s, 1, 1)",
            (DEVICE,),
        )
        for i in range(tags):
            conn.execute("INSERT INTO series (device_id, tag) VALUES (1, %s)", (f"t{i}",))
        conn.execute(
            """INSERT INTO sample (series_id, ts, value, quality)
               SELECT s.id, %(start)s + make_interval(secs => n), n %% 1000, 0
               FROM series s, generate_series(0, 86399) n""",
            {"start": start},
        )
        conn.execute(
            """INSERT INTO sample_1m
               SELECT series_id, date_trunc('minute', ts), count(*), count(value), sum(value),
                      min(value), max(value)
               FROM sample GROUP BY 1, 2"""
        )
        conn.execute("ANALYZE")


def measure(
    client: httpx.Client, path: str, params: dict[str, object], seconds: float
) -> list[float]:
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        latencies.append(time.perf_counter() - start)
    return latencies


def serve(config: Path, url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "guantong", "evidence", "serve", "-c", str(config)],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the evidence service did not start")


def main(args: argparse.Namespace) -> None:
    name = f"bench_evidence_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
    proc = None
    try:
        end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        started = time.perf_counter()
        fill(dsn, args.tags, end)
        print(f"store: {args.tags} tags × 86,400 samples in {time.perf_counter() - started:.1f} s")
        secret, sha256 = evidence.new_token()
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "node.token").write_text("unused\n", encoding="utf-8")
            port = free_port()
            config = Path(tmp) / "evidence.yaml"
            config.write_text(yaml.safe_dump({
                "kind": "evidence", "listen": f"127.0.0.1:{port}", "database": {"dsn": dsn},
                "identifiers": {"node": "http://127.0.0.1:1", "token_file": "node.token"},
                "tokens": [{"name": "bench", "role": "admin", "sha256": sha256}],
            }), encoding="utf-8")  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            proc = serve(config, url)
            day = {"start": (end - dt.timedelta(days=1)).isoformat(), "end": end.isoformat()}
            ten = {"start": (end - dt.timedelta(minutes=10)).isoformat(), "end": end.isoformat()}
            one = {"firm": FIRM, "device": DEVICE}
            cases = [
                ("healthz (baseline)", "/healthz", {}),
                ("live values", "/api/v1/live", one),
                ("series 10 min, raw", "/api/v1/series", {**one, "tag": "t0", **ten}),
                ("series 24 h, 2000 pts raw", "/api/v1/series",
                 {**one, "tag": "t0", "points": 2000, **day}),
                ("series 24 h, 1440 pts rollup", "/api/v1/series",
                 {**one, "tag": "t0", "points": 1440, **day}),
            ]  # fmt: skip
            headers = {"Authorization": f"Bearer {secret}"}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                results = []
                for label, path, params in cases:
                    measure(client, path, params, 0.3)  # warm: pool connection, plans
                    results.append((label, measure(client, path, params, args.seconds)))
        base = statistics.median(results[0][1])
        out = Figures("evidence_api")
        print(f"{'request':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 / baseline':>15}")
        for label, lat in results:
            p50 = statistics.median(lat)
            p99 = statistics.quantiles(lat, n=100)[98] if len(lat) >= 100 else max(lat)
            print(f"{label:32} {len(lat) / sum(lat):8.0f} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} "
                  f"{p50 / base:15.1f}")  # fmt: skip
            slug = label.split(" (")[0].replace(",", "").replace(" ", "_")
            out.add(f"{slug}_p50", f"{label}, p50", p50, "s", base, "healthz p50")
            out.add(f"{slug}_p99", f"{label}, p99", p99, "s")
        out.write(args.json)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    add_json_option(parser)
    main(parser.parse_args())
