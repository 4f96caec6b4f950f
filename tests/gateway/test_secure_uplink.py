"""The uplink over TLS with a client certificate and password, confined by a broker ACL.

The MQTT username is the gateway's identifier, so one Mosquitto ACL line confines every
gateway to its own topics (docs/protocol.md, "Topics"). A gateway that tries to publish
another gateway's envelopes is refused by the broker (MQTT 5 PUBACK "not authorized"), keeps
them in its outbox and says so in its stats, instead of deleting what was never accepted.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from _services import CertificateAuthority, MosquittoBroker
from _services._base import make_server_dir

import gateway.protocol as p
from edge import Batch, Quality, Sample
from gateway._keys import create_key
from gateway._outbox import Outbox
from gateway._runtime import Gateway
from gateway.config import GatewayConfig

FIRM = "88.709.911"
NS = 1_764_000_000_000_000_000
ACL = "pattern write gt/v1/%u/#\nuser ingest\ntopic read gt/v1/#\n"


class Broker:
    def __init__(self, directory: Path, broker: MosquittoBroker, ca: CertificateAuthority) -> None:
        self.directory = directory
        self.broker = broker
        self.ca = ca


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[Broker]:
    directory = make_server_dir("mqtt-acl")
    (directory / "pki").mkdir()
    ca = CertificateAuthority(directory / "pki")
    server = ca.issue("broker", server=True)
    passwd = directory / "passwd"
    users = {f"{FIRM}/gw.alpha": "alpha-pw", "ingest": "ingest-pw"}
    passwd.write_text("".join(f"{u}:{pw}\n" for u, pw in users.items()), encoding="utf-8")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    (directory / "acl").write_text(ACL, encoding="utf-8")
    broker = MosquittoBroker(
        directory=directory,
        listener_config=[
            f"cafile {ca.cert_path}",
            f"certfile {server.cert}",
            f"keyfile {server.key}",
            "require_certificate true",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {directory / 'acl'}",
        ],
    )
    with broker:
        yield Broker(directory, broker, ca)


def gateway_config(tmp_path: Path, env: Broker, gateway: str, username: str) -> GatewayConfig:
    client = env.ca.issue(gateway.replace("/", "_"))
    (tmp_path / "mqtt-password").write_text("alpha-pw\n", encoding="utf-8")
    doc = {
        "kind": "gateway",
        "gateway": {"id": gateway, "enterprise": f"{FIRM}/firm", "key_file": "gw.key"},
        "devices": [
            {
                "name": "kiln",
                "id": f"{FIRM}/dev.kiln",
                "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
                "groups": [
                    {
                        "name": "g",
                        "interval": "1s",
                        "tags": [{"name": "t0", "address": "hr:0", "type": "uint16"}],
                    }
                ],
            }
        ],
        "uplink": {
            "broker": f"mqtts://127.0.0.1:{env.broker.port}",
            "username": username,
            "password_file": "mqtt-password",
            "tls": {
                "ca_file": str(env.ca.cert_path),
                "cert_file": str(client.cert),
                "key_file": str(client.key),
            },
        },
        "envelope": {"max_delay": "20ms"},
        "health": None,
    }
    config = GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})
    create_key(config.gateway.key_file)
    return config


def reader(env: Broker) -> tuple[mqtt.Client, list[str]]:
    ingest = env.ca.issue("ingest")
    got: list[str] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.tls_set(
        ca_certs=str(env.ca.cert_path), certfile=str(ingest.cert), keyfile=str(ingest.key)
    )
    client.username_pw_set("ingest", "ingest-pw")
    client.on_connect = lambda c, *_: c.subscribe("gt/v1/#", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda _c, _u, msg: got.append(msg.topic)
    client.connect(env.broker.host, env.broker.port)
    client.loop_start()
    assert ready.wait(10)
    return client, got


def batch() -> Batch:
    return Batch("kiln", "g", (Sample("t0", 1, Quality.GOOD, NS),))


async def test_a_gateway_publishes_over_tls_within_its_own_topics(
    tmp_path: Path, secure_broker: Broker
) -> None:
    config = gateway_config(tmp_path, secure_broker, f"{FIRM}/gw.alpha", f"{FIRM}/gw.alpha")
    client, got = reader(secure_broker)
    try:
        async with Gateway(config) as gw:
            for _ in range(5):
                await gw.stream.put(batch())
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        client.disconnect()
        client.loop_stop()
    assert gw.uplink.stats.acked == gw.writer.stats.envelopes > 0
    assert gw.uplink.stats.refused == 0
    assert set(got) == {
        p.data_topic(config.gateway.id, f"{FIRM}/dev.kiln"),
        p.status_topic(config.gateway.id),
    }


async def test_a_gateway_speaking_for_another_is_refused_and_keeps_its_data(
    tmp_path: Path, secure_broker: Broker
) -> None:
    # the certificate and password of gw.alpha, but the identity of gw.beta
    config = gateway_config(tmp_path, secure_broker, f"{FIRM}/gw.beta", f"{FIRM}/gw.alpha")
    client, got = reader(secure_broker)
    try:
        async with Gateway(config, drain_timeout=1) as gw:
            await gw.stream.put(batch())
            async with asyncio.timeout(10):
                while gw.uplink.stats.refused == 0:  # noqa: ASYNC110 - polling a counter
                    await asyncio.sleep(0.05)
            assert "refused" in (gw.uplink.stats.last_error or "")
    finally:
        client.disconnect()
        client.loop_stop()
    assert [t for t in got if p.parse_topic(t).gateway == config.gateway.id] == []
    assert gw.uplink.stats.acked == 0
    with Outbox(gw.outbox.path) as box:
        assert box.depth()[0] == gw.writer.stats.envelopes, "refused envelopes stay on disk"
