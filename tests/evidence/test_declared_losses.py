"""A declared loss whose envelopes partly arrived, through ingest into the real store.

The gateway's outbox sent envelope 4 over a connection that died before the PUBACK, then
dropped envelopes 4 and 5 from a full outbox and declared both lost (20 samples). Envelope 4
had reached the broker and ingest all the same: only envelope 5 and its 10 samples are lost,
and a declared loss that counts 20 would excuse 10 samples the platform lost itself.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
from _services import PostgresServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import gateway.protocol as p
import identifiers

FIRM = "88.709.913"
KILN = f"{FIRM}/dev.kiln"
SLOT = 5  # seconds of 1 Hz samples per envelope, two tags


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


async def test_declared_envelopes_that_arrived_are_not_counted_lost(
    pg_server: PostgresServer, kit: Any, tmp_path: Path
) -> None:
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=2)
    window = evidence.Window(start, start + dt.timedelta(seconds=5 * SLOT))
    chain = kit.Chain(f"{FIRM}/gw.1")

    def data(slot: int) -> tuple[str, bytes]:
        samples = [
            p.Sample(tag, us(start) + t * 1_000_000, float(t))
            for t in range(slot * SLOT, (slot + 1) * SLOT)
            for tag in ("power", "temp")
        ]
        return chain.data(us(start) + ((slot + 1) * SLOT - 1) * 1_000_000, KILN, samples)

    def checkpoint(begin: int, end: int, each: int, after: tuple[int, bytes] | None) -> Any:
        """The gateway attests ``each`` samples of both tags in [start + begin, start + end)."""
        period = (us(start) + begin * 1_000_000, us(start) + end * 1_000_000)
        counts = tuple(p.Count(KILN, tag, each) for tag in ("power", "temp"))
        previous, digest = after or (0, p.GENESIS)
        cp = p.Checkpoint(*period, previous, digest, after is None, (p.Period(*period, counts),))
        return chain._next(period[1] + 500_000, checkpoint=cp)

    sent = [data(0), data(1)]  # seqs 1, 2
    sent.append(checkpoint(0, 2 * SLOT, 2 * SLOT, None))  # seq 3
    first = (chain.seq, chain.prev)
    sent.append(data(2))  # seq 4
    data(3)  # seq 5: made, dropped before it was sent
    sent.append(chain.loss(us(start) + 20_000_000, 4, 5, 20))  # seq 6 declares 4 and 5
    sent.append(data(4))  # seq 7
    sent.append(checkpoint(2 * SLOT, 5 * SLOT, 3 * SLOT, first))  # seq 8

    with pg_server.database() as dsn:
        record = identifiers.DeviceRecord(
            enterprise=f"{FIRM}/firm", gateway=chain.gateway, key_equipment=True,
            stages=("设备管理",),
        )  # fmt: skip
        registered = await kit.deliver(dsn, tmp_path, chain, {KILN: record}, sent)
        params = evidence.Params(fresh_within=60, outage_after=30)
        platform = Ed25519PrivateKey.generate()
        keys: dict[str, bytes | str] = {chain.gateway: p.public_key_bytes(chain.key)}
        with psycopg.connect(dsn) as conn:
            facts = evidence.collect(conn, f"{FIRM}/firm", window, registered, params=params)
            honest = evidence.build_report(
                conn, f"{FIRM}/firm", window, registered, platform, params=params
            )
            # a platform that lost 5 samples of its own (envelope 7's power readings)
            conn.execute(
                "DELETE FROM sample WHERE series_id = (SELECT id FROM series WHERE tag = 'power')"
                " AND ts >= %s",
                (start + dt.timedelta(seconds=4 * SLOT),),
            )
            conn.commit()
            dishonest = evidence.build_report(
                conn, f"{FIRM}/firm", window, registered, platform, params=params
            )

    integrity = facts.integrity
    assert (integrity.declared_losses, integrity.missing_envelopes) == (1, 1)
    assert (integrity.declared_lost_envelopes, integrity.declared_lost_samples) == (1, 10)
    assert (integrity.undeclared_missing, integrity.gaps) == (0, 0)
    assert facts.device(KILN).samples == 40  # envelopes 1, 2, 4 and 7

    # the report states what of each declared loss arrived
    assert honest.report["attestation"][0]["losses"] == [[4, 5, 20, "outbox full", 10]]
    # the 10 samples of envelope 5 are short, within what the loss declared: not a failure
    result = evidence.verify_report(honest, keys)
    assert result.ok, result.table()
    short = [f for f in result.findings if f.check == "count" and f.status == "unchecked"]
    assert len(short) == 2, result.table()
    # 15 short against 10 declared and not received: the platform's own loss shows
    result = evidence.verify_report(dishonest, keys)
    failed = [(f.check, f.subject.split()[:2]) for f in result.failures]
    assert ("count", [KILN, "power"]) in failed, result.table()
