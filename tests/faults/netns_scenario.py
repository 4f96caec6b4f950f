"""The network cut scenario itself, run by ``test_network.py`` inside a network namespace of
that test's own (not collected on its own: the file name does not match ``test_*.py``).

Everything runs on the namespace's loopback: a PostgreSQL cluster, the identifier node, a
Mosquitto with two listeners (one for the gateway, one for ingest), the simulators, the
gateway and ingest. The cut is a ``tc`` filter on ``lo`` that sends every packet to or from
the gateway's listener into a queue of length 0: the packets vanish, nobody sends a RST or an
ICMP error, the TCP connection stays half-open on both sides, and ingest's path to the broker
is untouched. The outcome goes to the JSON file named by ``GUANTONG_NETCUT_RESULT`` for the
outer test to record in the fault table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _services import MosquittoBroker, free_port
from _services._base import accepts_tcp
from faults._harness import Plant, fetch, load_average, wait_for

#: where the outcome goes; set by the outer test, which also made the namespace
RESULT_ENV = "GUANTONG_NETCUT_RESULT"
#: seconds the path stays cut: well beyond the gateway's keepalive (2 s, see ``Plant``)
CUT_SECONDS = int(os.environ.get("GUANTONG_NETCUT_SECONDS", "25"))


class Cut:
    """Silently drop every packet to or from ``port`` on ``lo`` (a qdisc of the namespace)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def apply(self) -> None:
        tc = ["tc"]
        for args in (
            ["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "1"],
            ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb",
             "rate", "100gbit", "quantum", "200000"],
            ["class", "add", "dev", "lo", "parent", "1:", "classid", "1:2", "htb",
             "rate", "100gbit", "quantum", "200000"],
            # a FIFO that holds nothing: whatever is classified here is dropped on enqueue
            ["qdisc", "add", "dev", "lo", "parent", "1:2", "handle", "2:", "pfifo", "limit", "0"],
            *(
                ["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1",
                 "u32", "match", "ip", way, str(self.port), "0xffff", "flowid", "1:2"]
                for way in ("dport", "sport")
            ),
        ):  # fmt: skip
            subprocess.run(tc + args, check=True, capture_output=True, text=True)

    def dropped(self) -> int:
        """Packets the cut has dropped so far."""
        out = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", "lo"], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        return sum(q.get("drops", 0) for q in json.loads(out) if q.get("handle") == "2:")

    def remove(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False,
                       capture_output=True)  # fmt: skip


def connect_outcome(port: int, timeout: float = 1.5) -> str:
    """What a new TCP connection to ``port`` meets: "timed out", "refused" or "connected"."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return "connected"
    except TimeoutError:
        return "timed out"
    except ConnectionRefusedError:
        return "refused"


#: the longest time between two successive samples of one series: polls the gateway missed
POLL_GAP = (
    "SELECT coalesce(extract(epoch FROM max(gap)), 0)::float8 FROM (SELECT ts - lag(ts) "
    "OVER (PARTITION BY series_id ORDER BY ts) AS gap FROM sample) AS gaps"
)


def answer_time(plant: Plant) -> float:
    """Seconds the gateway takes to answer ``/healthz`` (its event loop's responsiveness)."""
    started = time.monotonic()
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(plant.gateway_health(), timeout=15)
    return time.monotonic() - started


def metric(plant: Plant, name: str) -> float | None:
    try:
        return plant.gateway_metric(name)
    except (httpx.HTTPError, KeyError):
        return None


async def test_network_cut_inside_the_namespace(pg_dsn: str, plant_factory: Any) -> None:
    result = os.environ.get(RESULT_ENV)
    if not result:
        pytest.skip("runs inside the network namespace that test_network.py creates")
    gateway_port = free_port()
    broker = MosquittoBroker(
        listener_config=["allow_anonymous true", f"listener {gateway_port} 127.0.0.1"]
    )
    with broker:
        plant: Plant = await plant_factory(
            pg_dsn, broker=broker, uplink_url=f"mqtt://127.0.0.1:{gateway_port}"
        )
        await plant.grows()
        connects = await asyncio.to_thread(metric, plant, "uplink_connects")
        assert connects is not None
        cut = Cut(gateway_port)
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(cut.apply)
        try:
            started = loop.time()
            # the cut is silent for the gateway's path only
            assert await asyncio.to_thread(connect_outcome, gateway_port) == "timed out"
            assert await asyncio.to_thread(accepts_tcp, "127.0.0.1", broker.port)
            await wait_for(
                lambda: metric(plant, "uplink_connected") == 0, CUT_SECONDS, "gateway noticed"
            )
            noticed = loop.time() - started
            # published without a PUBACK when the connection was given up: sent again
            inflight = await asyncio.to_thread(metric, plant, "envelopes_inflight") or 0
            receipts = await plant.receipts()
            slowest = 0.0  # the gateway's slowest /healthz answer during the cut
            while loop.time() - started < CUT_SECONDS:
                slowest = max(slowest, await asyncio.to_thread(answer_time, plant))
                await asyncio.sleep(0.2)
            during = await plant.receipts() - receipts
            dropped = await asyncio.to_thread(cut.dropped)
            backlog = await asyncio.to_thread(metric, plant, "outbox_envelopes") or 0
        finally:
            await asyncio.to_thread(cut.remove)
        mended = loop.time()
        await wait_for(
            lambda: (metric(plant, "uplink_connects") or 0) > connects, 60, "gateway reconnected"
        )
        back = loop.time() - mended
        await plant.grows()
        row = await plant.reconcile(f"network cut gateway↔broker, {CUT_SECONDS} s, silent")
        broker_saw = broker_log_lines(broker, "exceeded timeout")
        (gap,) = (await asyncio.to_thread(fetch, pg_dsn, POLL_GAP))[0]
    row.notes.append(
        f"gateway noticed the dead link after {noticed:.1f} s (keepalive 2 s) with "
        f"{inflight:.0f} envelopes in flight, reconnected {back:.1f} s after the mend and sent "
        f"its backlog of {backlog:.0f} envelopes; {dropped} packets dropped; {during} "
        f"envelopes stored during the cut once noticed; slowest gateway /healthz answer "
        f"{slowest:.2f} s, longest gap between two polls of a tag {gap:.2f} s (interval "
        f"0.2 s); the broker timed out {broker_saw} old session(s); "
        f"load average {load_average()}"
    )
    await asyncio.to_thread(
        Path(result).write_text, json.dumps(dataclasses.asdict(row)), encoding="utf-8"
    )
    assert dropped > 0
    assert broker_saw >= 1  # the broker kept the half-open session until its keepalive


def broker_log_lines(broker: MosquittoBroker, text: str) -> int:
    """Lines of the broker's log containing ``text``."""
    log = broker.log_path
    if log is None or not log.exists():
        return 0
    return sum(text in line for line in log.read_text(errors="replace").splitlines())
