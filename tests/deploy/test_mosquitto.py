"""Mosquitto started with deploy/mosquitto/guantong.conf and its ACL, as a platform runs it.

Only the paths of the certificate, password and ACL files and the two ports are replaced
(and the TLS listener bound to 127.0.0.1); every other line is the deployed one. A gateway
whose MQTT username is its identifier publishes over TLS under its own topics; the same
login is refused on another gateway's topics; ingest reads everything over the local listener.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from _services import CertificateAuthority, MosquittoBroker, free_port
from _services._base import accepts_tcp, is_root, make_server_dir, system_user
from paho.mqtt.reasoncodes import ReasonCode

import gateway.protocol as p
from edge import Batch, Quality, Sample
from gateway._keys import create_key
from gateway._runtime import Gateway
from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
FIRM = "88.709.911"
ALPHA, BETA = f"{FIRM}/gw.alpha", f"{FIRM}/gw.beta"
NS = 1_764_000_000_000_000_000
PASSWORDS = {ALPHA: "alpha-pw", BETA: "beta-pw", "ingest": "ingest-pw"}


def deployed_config(directory: Path, tls_port: int, local_port: int) -> str:
    """deploy/mosquitto/guantong.conf with this test's files and ports."""
    text = (ROOT / "deploy" / "mosquitto" / "guantong.conf").read_text(encoding="utf-8")
    for old, new in {
        "/etc/mosquitto/guantong/": f"{directory}/",
        "\nlistener 8883\n": f"\nlistener {tls_port} 127.0.0.1\n",
        "\nlistener 1883 127.0.0.1\n": f"\nlistener {local_port} 127.0.0.1\n",
    }.items():
        assert old in text, f"deploy/mosquitto/guantong.conf no longer has {old!r}"
        text = text.replace(old, new)
    text += f"persistence_location {directory}/\n"  # Debian's mosquitto.conf sets it
    if is_root():  # as root Mosquitto switches to this user after binding
        text += "user mosquitto\n" if system_user("mosquitto") else "user root\n"
    return text


class DeployedMosquitto(MosquittoBroker):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.local_port = free_port()

    def _config(self) -> str:
        return deployed_config(self.directory, self.port, self.local_port)


class Platform:
    def __init__(self, broker: DeployedMosquitto, ca: CertificateAuthority) -> None:
        self.broker, self.ca = broker, ca


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    directory = make_server_dir("mqtt-deploy")
    ca = CertificateAuthority(directory)
    (directory / "ca.pem").write_bytes(ca.cert_path.read_bytes())
    server = ca.issue("broker", server=True)
    server.cert.rename(directory / "server.pem")
    server.key.rename(directory / "server.key")
    passwd = directory / "passwd"
    passwd.write_text("".join(f"{u}:{pw}\n" for u, pw in PASSWORDS.items()), encoding="utf-8")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True)
    (directory / "acl").write_bytes((ROOT / "deploy" / "mosquitto" / "acl").read_bytes())
    with DeployedMosquitto(directory) as broker:
        deadline = time.monotonic() + 10  # the second listener may open a moment later
        while not accepts_tcp("127.0.0.1", broker.local_port):
            assert time.monotonic() < deadline, "the local listener did not open"
            time.sleep(0.02)
        yield Platform(broker, ca)


def client(username: str | None, *, ca: Path | None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if ca is not None:
        c.tls_set(ca_certs=str(ca))
    if username is not None:
        c.username_pw_set(username, PASSWORDS[username])
    return c


def connect(c: mqtt.Client, port: int, within: float = 10) -> ReasonCode | None:
    """Connect and return the CONNACK's reason code, None if none came."""
    done = threading.Event()
    result: list[ReasonCode] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: (result.append(rc), done.set())
    c.connect("127.0.0.1", port)
    c.loop_start()
    return result[0] if done.wait(within) else None


def gateway_config(tmp_path: Path, env: Platform) -> GatewayConfig:
    (tmp_path / "mqtt-password").write_text(PASSWORDS[ALPHA] + "\n", encoding="utf-8")
    doc = {
        "kind": "gateway",
        "gateway": {"id": ALPHA, "enterprise": f"{FIRM}/firm", "key_file": "gw.key"},
        "devices": [{
            "name": "kiln", "id": f"{FIRM}/dev.kiln",
            "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
            "groups": [{"name": "g", "interval": "1s",
                        "tags": [{"name": "t0", "address": "hr:0", "type": "uint16"}]}],
        }],
        "uplink": {
            "broker": f"mqtts://127.0.0.1:{env.broker.port}",
            "username": ALPHA,  # as in deploy/gateway.yaml: the identifier
            "password_file": "mqtt-password",
            "tls": {"ca_file": str(env.ca.cert_path)},
        },
        "envelope": {"max_delay": "20ms"},
        "health": None,
    }  # fmt: skip
    config = GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})
    create_key(config.gateway.key_file)
    return config


async def test_a_gateway_writes_only_under_its_own_identifier(
    tmp_path: Path, platform: Platform
) -> None:
    ingest = client("ingest", ca=None)
    got: list[str] = []
    subscribed = threading.Event()
    ingest.on_subscribe = lambda *_: subscribed.set()
    ingest.on_message = lambda _c, _u, msg: got.append(msg.topic)
    assert connect(ingest, platform.broker.local_port) == 0
    ingest.subscribe("gt/v1/#", qos=1)
    assert subscribed.wait(10)
    intruder = client(ALPHA, ca=platform.ca.cert_path)
    try:
        config = gateway_config(tmp_path, platform)
        async with Gateway(config) as gw:
            for n in range(5):
                await gw.stream.put(Batch("kiln", "g", (Sample("t0", n, Quality.GOOD, NS + n),)))
                await asyncio.sleep(0.05)
        assert gw.uplink.stats.acked == gw.writer.stats.envelopes > 0
        assert gw.uplink.stats.refused == 0

        # gw.alpha's password on gw.beta's topic: the broker says "not authorized"
        assert connect(intruder, platform.broker.port) == 0
        acks: list[ReasonCode] = []
        acked = threading.Event()
        intruder.on_publish = lambda _c, _u, _mid, rc, _p: (acks.append(rc), acked.set())
        intruder.publish(f"gt/v1/{FIRM}/gw.beta/data/dev.kiln", b"{}", qos=1)
        assert acked.wait(10)
        assert acks[0] == ReasonCode(mqtt.PacketTypes.PUBACK, "Not authorized")
        await asyncio.sleep(0.3)
    finally:
        for c in (ingest, intruder):
            c.disconnect()
            c.loop_stop()
    assert {p.parse_topic(t).gateway for t in got} == {ALPHA}
    assert p.data_topic(ALPHA, f"{FIRM}/dev.kiln") in got


def test_anonymous_and_plain_text_logins_from_outside_are_refused(platform: Platform) -> None:
    anonymous = client(None, ca=platform.ca.cert_path)
    try:
        assert connect(anonymous, platform.broker.port) == ReasonCode(
            mqtt.PacketTypes.CONNACK, "Not authorized"
        )
    finally:
        anonymous.disconnect()
        anonymous.loop_stop()
    # the TLS listener speaks only TLS: a password in plain text gets no answer
    plain = client(ALPHA, ca=None)
    try:
        assert connect(plain, platform.broker.port, within=3) is None
    finally:
        plain.disconnect()
        plain.loop_stop()
