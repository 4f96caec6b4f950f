"""Outbox throughput and disk overhead: prints figures, asserts nothing.

    .venv/bin/python bench/outbox_bench.py [--seconds 3] [--payload 20000]

For each durability setting and transaction size it appends envelopes for a few seconds while
a consumer acknowledges them, then prints envelopes/s, MB/s and the SQLite file size relative
to the payload bytes it holds when full (the overhead to plan disk space for).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from _bench import Figures, add_json_option

from gateway._outbox import Head, Outbox


def run(path: Path, sync: str, batch: int, size: int, seconds: float) -> tuple[float, float]:
    data = os.urandom(size)
    digest = hashlib.sha256(data).digest()
    seq = 0
    with Outbox(path, max_bytes=64 << 20, synchronous=sync) as box:  # type: ignore[arg-type]
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            rows = [(seq + i + 1, "t", data, 1) for i in range(batch)]
            seq += batch
            box.append(rows, Head(seq, digest))
            box.ack(e.id for e in box.peek(batch))
        elapsed = time.perf_counter() - start
    return seq / elapsed, seq * size / elapsed / 1e6


def overhead(path: Path, size: int) -> float:
    max_bytes = 32 << 20
    data = os.urandom(size)
    with Outbox(path, max_bytes=max_bytes, synchronous="NORMAL") as box:
        for seq in range(1, 3 * max_bytes // size):
            box.append([(seq, "t", data, 1)], Head(seq, b"x"))
        assert box._db is not None
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / max_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--payload", type=int, default=20_000, help="bytes per envelope")
    add_json_option(parser)
    args = parser.parse_args()
    out = Figures("outbox")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"envelope payload {args.payload} bytes, {args.seconds} s per case")
        for sync in ("FULL", "NORMAL"):
            for batch in (1, 10):
                path = Path(tmp) / f"{sync}-{batch}.db"
                rate, mbs = run(path, sync, batch, args.payload, args.seconds)
                print(f"synchronous={sync:6} {batch:2} per txn: ", end="")
                print(f"{rate:8.0f} envelopes/s {mbs:6.1f} MB/s")
                out.add(f"{sync.lower()}_{batch}", f"synchronous={sync}, {batch} per transaction",
                        rate, "envelopes/s")  # fmt: skip
        ratio = overhead(Path(tmp) / "full.db", args.payload)
        print(f"file size when full / max_bytes: {ratio:.2f}")
    out.add("full_size", "file size when full / max_bytes", ratio, "×")
    out.note(f"envelope payload {args.payload} bytes, {args.seconds} s per case")
    out.write(args.json)


if __name__ == "__main__":
    main()
