"""Signed report generation for one firm: prints figures, asserts nothing.

    .venv/bin/python bench/report_bench.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--devices 100] [--tags 1] [--hours 24]

Makes a throwaway database on the server of ``--dsn`` and fills it through ingest's own
store path (``Batch`` and ``Store.write``: binary COPY, the 1-minute rollup, receipts) with
one firm whose gateway reads ``--devices`` devices of ``--tags`` tags at 1 Hz for ``--hours``
(one data receipt per device and minute), plus the gateway's checkpoints every 5 minutes,
signed with a test key and decoded by ingest's ``precheck``. Then, each in a process of its
own (so that the peak RSS is its own):

- **collect**: ``evidence.collect`` of the window, the baseline: what any report is built on;
- **collect with OEE**: the same, every device declaring OEE over its first tag (state) and
  last tag (part counter): the cost of reading a day of raw samples per declared tag;
- **report**: ``evidence.build_report`` (collect, assess, the checkpoints and the platform's
  count per attested period, platform signature) + the JSON file + the HTML page;
- **verify**: ``evidence.verify_report`` of that file with the gateway's key.

The device records come as a list, not from an identifier node.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _bench import Figures, add_json_option, in_child

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

FIRM = "88.709.911"
GATEWAY = f"{FIRM}/gw.bench"
PERIOD_US = 300_000_000
SECOND_US = 1_000_000
#: the gateway key is fixed, so that the children can verify without being told it
SEED = bytes(range(32))


def fill(dsn: str, devices: list[str], tags: list[str], start_us: int, hours: float) -> int:
    """The store of one firm: samples, rollup, receipts and checkpoints; returns the samples."""
    import gateway.protocol as p  # noqa: PLC0415
    from ingest import _checkpoints  # noqa: PLC0415
    from ingest._decode import Checked, precheck  # noqa: PLC0415
    from ingest._rows import pg_us  # noqa: PLC0415
    from ingest._store import Batch, Store  # noqa: PLC0415

    key = Ed25519PrivateKey.from_private_bytes(SEED)
    store = Store(dsn, partitions_ahead=1)
    store.connect()
    eid = store.enterprise_id(f"{FIRM}/firm")
    gid = store.gateway_id(GATEWAY, eid)
    ids = {d: store.device_id(d, eid, gid) for d in devices}
    series = {d: store.series_ids(ids[d], tags) for d in devices}
    end_us = start_us + int(hours * 3600 * SECOND_US)
    seq, prev_cp, prev_hash, total = 0, 0, p.GENESIS, 0
    for period in range(start_us, end_us, PERIOD_US):
        batch = Batch()
        for minute in range(period, period + PERIOD_US, 60 * SECOND_US):
            for device in devices:
                samples = [
                    (tag, ts, float(ts % 1000), 0)
                    for ts in range(minute, minute + 60 * SECOND_US, SECOND_US)
                    for tag in tags
                ]
                batch.add_samples(samples, series[device])
                seq += 1
                created = pg_us(minute + 60 * SECOND_US)
                batch.receipts.append(
                    (gid, seq, os.urandom(32), os.urandom(32), True, 1, ids[device],
                     len(samples), created, created + 50_000)
                )  # fmt: skip
        counts = tuple(
            p.Count(device, tag, PERIOD_US // SECOND_US)
            for device in sorted(devices)
            for tag in sorted(tags)
        )
        cp = p.Checkpoint(
            period, period + PERIOD_US, prev_cp, prev_hash, seq == len(devices) * 5,
            (p.Period(period, period + PERIOD_US, counts),),
        )  # fmt: skip
        seq += 1
        env = p.Envelope(GATEWAY, seq, os.urandom(32), period + PERIOD_US + 1000, checkpoint=cp)
        checked = precheck(p.envelope_topic(env), p.encode_json(p.sign(env, key)))
        if not isinstance(checked, Checked):
            raise SystemExit(f"the bench's own checkpoint was refused: {checked}")
        batch.checkpoints.append(_checkpoints.rows(gid, checked))
        created = pg_us(env.created)
        batch.receipts.append(
            (gid, seq, env.digest, env.prev, True, 3, None, 0, created, created + 50_000)
        )
        prev_cp, prev_hash = seq, env.digest
        total += batch.samples
        store.write(batch)
    store.close()
    return total


def _args(payload: dict[str, Any]) -> tuple[Any, ...]:
    import evidence  # noqa: PLC0415

    start = dt.datetime.fromisoformat(payload["start"])
    window = evidence.Window(start, start + dt.timedelta(hours=payload["hours"]))
    registered = [
        evidence.RegisteredDevice(d, GATEWAY, key_equipment=True, stages=("设备管理",))
        for d in payload["devices"]
    ]
    return evidence, window, registered


def child(role: str, payload: dict[str, Any]) -> dict[str, Any]:
    evidence, window, registered = _args(payload)
    firm = f"{FIRM}/firm"
    out: dict[str, Any] = {}
    if role == "collect-oee":
        import identifiers  # noqa: PLC0415

        tags = payload["tags"]
        oee = identifiers.OeeSignals(
            state=tags[0], running=(0,), planned=(0,), total=tags[-1], ideal_cycle=1
        )
        registered = [
            evidence.RegisteredDevice(d.identifier, d.gateway, True, d.stages, oee=oee)
            for d in registered
        ]
    started = time.perf_counter()
    if role in ("collect", "collect-oee"):
        with psycopg.connect(payload["dsn"]) as conn:
            facts = evidence.collect(conn, firm, window, registered)
        out["samples"] = sum(t.samples for t in facts.tags)
        out["oee"] = sum(d.oee is not None and d.oee.observed_seconds > 0 for d in facts.devices)
    elif role == "report":
        with psycopg.connect(payload["dsn"]) as conn:
            report = evidence.build_report(
                conn, firm, window, registered, Ed25519PrivateKey.generate()
            )
        raw = report.to_json()
        Path(payload["file"]).write_bytes(raw)
        Path(payload["file"]).with_suffix(".html").write_text(
            evidence.render_html(report, "sha256:…"), encoding="utf-8"
        )
        out["bytes"] = len(raw)
        out["checkpoints"] = sum(len(a["checkpoints"]) for a in report.report["attestation"])
    else:
        import gateway.protocol as p  # noqa: PLC0415

        report = evidence.Report.from_json(Path(payload["file"]).read_bytes())
        public = p.public_key_bytes(Ed25519PrivateKey.from_private_bytes(SEED))
        result = evidence.verify_report(report, {GATEWAY: public})
        out["failures"] = len(result.failures)
        out["findings"] = len(result.findings)
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:  # noqa: PLR0915 - fill, then three measurements
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--tags", type=int, default=1)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--role")
    parser.add_argument("--payload")
    add_json_option(parser)
    args = parser.parse_args()
    if args.role:
        import json  # noqa: PLC0415

        payload = json.loads(Path(args.payload).read_text(encoding="utf-8"))
        print(json.dumps(child(args.role, payload)))
        return

    from ingest import migrate  # noqa: PLC0415

    name = f"bench_report_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=name)
    try:
        migrate(dsn)
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - dt.timedelta(days=1)
        devices = [f"{FIRM}/dev.m{i:03d}" for i in range(args.devices)]
        tags = [f"t{i:02d}" for i in range(args.tags)]
        filled = time.perf_counter()
        start_us = (start - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
        samples = fill(dsn, devices, tags, start_us, args.hours)
        print(
            f"filled {samples:,} samples ({args.devices} devices × {args.tags} tags × "
            f"{args.hours:g} h at 1 Hz) in {time.perf_counter() - filled:.1f} s"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        file = Path(tempfile.gettempdir()) / f"{name}.json"
        payload = {"dsn": dsn, "start": start.isoformat(), "hours": args.hours,
                   "devices": devices, "tags": tags, "file": str(file)}  # fmt: skip
        script = str(Path(__file__).resolve())
        base = in_child(script, "collect", payload)
        with_oee = in_child(script, "collect-oee", payload)
        report = in_child(script, "report", payload)
        verify = in_child(script, "verify", payload)
        if base["samples"] != samples:
            raise SystemExit(f"collect counted {base['samples']} samples of {samples}")
        print(
            f"collect (baseline): {base['seconds']:.2f} s, peak RSS {base['peak_rss_mib']:.0f} MiB"
        )
        print(
            f"collect with OEE:   {with_oee['seconds']:.2f} s, peak RSS "
            f"{with_oee['peak_rss_mib']:.0f} MiB, OEE of {with_oee['oee']} devices; "
            f"{with_oee['seconds'] / base['seconds']:.2f}× the baseline"
        )
        print(
            f"report:             {report['seconds']:.2f} s, peak RSS "
            f"{report['peak_rss_mib']:.0f} MiB, {report['bytes'] / 1e6:.1f} MB JSON, "
            f"{report['checkpoints']} checkpoints; {report['seconds'] / base['seconds']:.2f}× "
            "the baseline"
        )
        print(
            f"verify:             {verify['seconds']:.2f} s, peak RSS "
            f"{verify['peak_rss_mib']:.0f} MiB, {verify['findings']} findings, "
            f"{verify['failures']} failed"
        )
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        out = Figures("report")
        out.add("collect", "collect the window (the baseline)", base["seconds"], "s")
        out.add("report", "build, sign and render the report", report["seconds"], "s",
                base["seconds"], "collect alone")  # fmt: skip
        out.add("verify", "verify the report file", verify["seconds"], "s")
        out.add("report_peak_rss", "report peak RSS", report["peak_rss_mib"], "MiB",
                base["peak_rss_mib"], "collect alone")  # fmt: skip
        out.add("verify_failures", "verification failures", verify["failures"], "checks")
        out.note(f"{samples:,} samples: {args.devices} devices × {args.tags} tags × "
                 f"{args.hours:g} h at 1 Hz")  # fmt: skip
        out.write(args.json)
        file.unlink(missing_ok=True)
        file.with_suffix(".html").unlink(missing_ok=True)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
