"""``guantong gateway run`` as a process: simulators → gateway → real Mosquitto.

The gateway is killed with SIGKILL mid-stream and started again; afterwards every envelope it
committed reaches the broker, the chain is unbroken across the kill, and SIGTERM stops it with
exit 0 and a retained offline status.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from _services import MosquittoBroker, MqttServer, free_port, kiln_works

import gateway.protocol as p
import simulators
from gateway._keys import create_key, load_key
from gateway._outbox import Outbox
from gateway._runtime import running
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config

pytestmark = pytest.mark.slow


def start_gateway(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "guantong", "gateway", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_sigkill_and_restart_lose_nothing_and_sigterm_stops_cleanly(
    tmp_path: Path, mqtt_broker: MqttServer, subscribe: Callable[[MqttServer, str], Any]
) -> None:
    factory_file = tmp_path / "factory.yaml"
    factory_file.write_text(yaml.safe_dump(kiln_works(free_port())), encoding="utf-8")
    fac = simulators.load_factory(factory_file)
    config = gateway_config(fac, base_dir=tmp_path)
    config["uplink"] = {"broker": mqtt_broker.url, "checkpoint_interval": "1s"}
    config["envelope"] = {"max_samples": 100, "max_delay": "100ms"}
    config["health"] = None
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    init = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "guantong", "gateway", "init", "-c", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    public = bytes.fromhex(json.loads(init.stdout)["public_key"])
    gw_id = config["gateway"]["id"]
    sub = subscribe(mqtt_broker, p.status_topic(gw_id).rsplit("/", 1)[0] + "/#")

    async with simulators.Simulator(fac, base_dir=tmp_path):
        proc = start_gateway(path)
        await asyncio.sleep(4)
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.communicate)
        killed_at = len({s.envelope.seq for s in sub.envelopes()})
        assert killed_at > 0, "the gateway delivered nothing before it was killed"

        proc = start_gateway(path)
        await asyncio.sleep(4)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, err
        await asyncio.sleep(0.5)

    with Outbox(tmp_path / "outbox.db") as box:
        head = box.head()
        assert box.depth() == (0, 0), "a clean stop leaves nothing undelivered"
    assert head is not None
    assert head.seq > killed_at
    by_seq: dict[int, p.Envelope] = {}
    for signed in sub.envelopes():
        signed.verify(public)
        by_seq.setdefault(signed.envelope.seq, signed.envelope)
    assert sorted(by_seq) == list(range(1, head.seq + 1)), "every committed envelope arrived"
    for seq in range(2, head.seq + 1):
        assert by_seq[seq].prev == by_seq[seq - 1].digest, f"chain broken at {seq}"
    data = [e for e in by_seq.values() if e.kind is p.Kind.DATA]
    assert {e.device for e in data} == {"88.709.911/dev.kiln-1", "88.709.911/dev.meter-1"}
    assert_attested(data, [e for e in by_seq.values() if e.kind is p.Kind.CHECKPOINT])
    statuses = sub.statuses()
    assert statuses[-1] == ({"online": False, "gateway": gw_id}, False)
    assert public == p.public_key_bytes(load_key(tmp_path / "gateway.key"))


def assert_attested(data: list[p.Envelope], checkpoints: list[p.Envelope]) -> None:
    """The checkpoints form one sequence over time, the first of each run says it restarted,
    and they count exactly the samples sent before the last one's end, by period."""
    assert len(checkpoints) >= 4, "a checkpoint every second of both runs"
    previous, previous_hash, end = 0, p.GENESIS, None
    restarts = 0
    attested: Counter[tuple[str, str, int]] = Counter()
    for env in checkpoints:
        cp = env.checkpoint
        assert cp is not None
        assert (cp.previous, cp.previous_hash) == (previous, previous_hash)
        assert end is None or cp.start == end
        previous, previous_hash, end = env.seq, env.digest, cp.end
        restarts += cp.restarted
        for period in cp.periods:
            for count in period.counts:
                attested[count.device, count.tag, period.start] += count.samples
    assert restarts == 2, "the first checkpoint of each run"
    sent = {(e.device, s.tag, s.ts) for e in data for s in e.samples if s.ts < end}
    assert attested == Counter((d, tag, ts - ts % 1_000_000) for d, tag, ts in sent)


#: the issue asks for a 60 s outage; the default run keeps the suite short
OUTAGE_SECONDS = float(os.environ.get("GUANTONG_TEST_OUTAGE_SECONDS", "3"))


def sent(gw: Any) -> int:
    return int(gw.writer.stats.envelopes + gw.writer.stats.checkpoints)


async def test_a_broker_outage_while_reading_simulators_loses_no_sample(
    tmp_path: Path, subscribe: Callable[[MqttServer, str], Any], durable_broker: MosquittoBroker
) -> None:
    broker = durable_broker
    factory_file = tmp_path / "factory.yaml"
    factory_file.write_text(yaml.safe_dump(kiln_works(free_port())), encoding="utf-8")
    fac = simulators.load_factory(factory_file)
    data = gateway_config(fac, base_dir=tmp_path)
    data["uplink"] = {"broker": broker.url, "checkpoint_interval": "1s"}
    data["envelope"] = {"max_samples": 100, "max_delay": "100ms"}
    data["health"] = None
    config = GatewayConfig.model_validate(data, context={"base_dir": tmp_path})
    create_key(config.gateway.key_file)
    sub = subscribe(broker, "gt/v1/#")
    async with simulators.Simulator(fac, base_dir=tmp_path):
        async with running(config, drain_timeout=OUTAGE_SECONDS + 30) as gw:
            await asyncio.sleep(2)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(OUTAGE_SECONDS)
            backlog = gw.outbox.depth()[0]
            await asyncio.to_thread(broker.start)
            await asyncio.sleep(2)
        read = gw.stream.stats.samples
    async with asyncio.timeout(30):
        while len({s.envelope.seq for s in sub.envelopes()}) < sent(gw):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert backlog > 0, "envelopes waited in the outbox during the outage"
    assert gw.uplink.stats.connects >= 2
    public = p.public_key_bytes(load_key(config.gateway.key_file))
    by_seq: dict[int, p.Envelope] = {}
    for signed in sub.envelopes():
        signed.verify(public)
        by_seq.setdefault(signed.envelope.seq, signed.envelope)
    assert sorted(by_seq) == list(range(1, sent(gw) + 1))
    assert gw.writer.stats.checkpoints >= 3, "checkpoints went on during the outage"
    assert sum(len(e.samples) for e in by_seq.values()) == read == gw.writer.stats.samples
