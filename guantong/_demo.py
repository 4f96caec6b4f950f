"""``guantong demo``: a simulated factory whose data flows, signed, through a real broker.

Everything runs on 127.0.0.1 on free ports with no set-up: the demo factory's PLC simulators,
a Mosquitto broker of its own, the gateway (key, outbox and config under the work directory)
and a verifier that subscribes like a platform would, checks every envelope's signature
against the gateway's public key, follows the chain, and counts what arrives. A status line
shows samples read and verified per second, devices answering, and the outbox depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

import simulators
from gateway import protocol
from gateway._keys import create_key, load_key
from gateway._runtime import running
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config


class DemoError(Exception):
    """The demo cannot start: a program it needs is missing or a server did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Any:
    """A Mosquitto of the demo's own on a free port; yields the port."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise DemoError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
    if os.geteuid() == 0:  # as root Mosquitto switches user; it reads nothing after that
        lines.append("user mosquitto" if _has_user("mosquitto") else "user root")
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = (workdir / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)  # noqa: S603
    try:
        deadline = time.monotonic() + 10
        while not _accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"mosquitto did not start; see {workdir / 'mosquitto.log'}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Verifier:
    """Subscribes to the gateway's topics and verifies every envelope, like a platform."""

    public_key: bytes
    envelopes: int = 0
    samples: int = 0
    duplicates: int = 0
    rejected: int = 0
    devices: set[str] = field(default_factory=set)
    _seen: dict[int, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if protocol.parse_topic(msg.topic).kind == "status":
            return
        try:
            signed = protocol.decode_json(msg.payload)
            protocol.check_topic(msg.topic, signed.envelope)
            signed.verify(self.public_key)
        except protocol.ProtocolError:
            with self._lock:
                self.rejected += 1
            return
        env = signed.envelope
        with self._lock:
            if env.seq in self._seen:
                self.duplicates += 1
                return
            self._seen[env.seq] = env.prev
            self.envelopes += 1
            self.samples += len(env.samples)
            if env.device is not None:
                self.devices.add(env.device)

    def gaps(self) -> int:
        """Sequence numbers below the highest seen that have not arrived (yet)."""
        with self._lock:
            return max(self._seen, default=0) - len(self._seen)


@contextlib.asynccontextmanager
async def verifier(port: int, gateway: str, public_key: bytes) -> AsyncIterator[Verifier]:
    check = Verifier(public_key)
    base = protocol.status_topic(gateway).rsplit("/", 1)[0]
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="guantong-demo-verifier")
    client.on_connect = lambda c, *_: c.subscribe(base + "/#", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = check.on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        if not await asyncio.to_thread(ready.wait, 10):
            raise DemoError("the verifier could not subscribe")
        yield check
    finally:
        client.disconnect()
        client.loop_stop()


def demo_factory(source: Path, workdir: Path) -> simulators.FactoryConfig:
    """The factory file with free ports, so the demo never collides with a running server."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    for endpoint in data["endpoints"]:
        if "port" in endpoint:
            endpoint["port"] = free_port()
    data.pop("control", None)
    path = workdir / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return simulators.load_factory(path)


def demo_gateway(factory: simulators.FactoryConfig, workdir: Path, port: int) -> GatewayConfig:
    data = gateway_config(factory, base_dir=workdir)
    data["uplink"] = {"broker": f"mqtt://127.0.0.1:{port}"}
    data["health"] = {"listen": "127.0.0.1:0"}
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    config = GatewayConfig.model_validate(data, context={"base_dir": workdir})
    if not config.gateway.key_file.exists():
        create_key(config.gateway.key_file)
    return config


async def run_demo(
    factory_file: Path,
    workdir: Path,
    *,
    duration: float | None,
    say: Callable[[str], None],
    status: Callable[[str], None],
) -> Verifier:
    """Run until ``duration`` seconds pass or SIGINT (Ctrl-C) or SIGTERM arrives; then stop
    everything in order, the broker last, so that nothing is left running."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    factory = demo_factory(factory_file, workdir)
    started = time.monotonic()
    with mosquitto(workdir) as port:
        config = demo_gateway(factory, workdir, port)
        public_key = protocol.public_key_bytes(load_key(config.gateway.key_file))
        async with contextlib.AsyncExitStack() as stack:
            # entered first, left last: it sees what the gateway delivers while it stops
            check = await stack.enter_async_context(verifier(port, config.gateway.id, public_key))
            sim = await stack.enter_async_context(simulators.Simulator(factory, base_dir=workdir))
            gw = await stack.enter_async_context(running(config))
            say(f"factory {factory.title or factory.name}: {len(sim.machines)} machines simulated")
            say(f"MQTT broker: mqtt://127.0.0.1:{port} (topics gt/v1/#)")
            say(f"gateway {config.gateway.id}, key {protocol.fingerprint(gw.public_key)}")
            say(f"reading {len(config.devices)} devices over Modbus TCP and OPC UA; health: "
                f"{gw.health.url if gw.health else 'off'}")  # fmt: skip
            say(f"ready in {time.monotonic() - started:.1f} s; Ctrl-C stops")
            last = (time.monotonic(), 0, 0)
            while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1)
                now, read, verified = time.monotonic(), gw.stream.stats.samples, check.samples
                up = sum(1 for d in config.devices if gw.writer.stats.device_up.get(d.name, True))
                envelopes, _ = gw.outbox.depth()
                status(
                    f"read {(read - last[1]) / (now - last[0]):7.0f} samples/s | verified "
                    f"{(verified - last[2]) / (now - last[0]):7.0f} samples/s "
                    f"({check.samples} in {check.envelopes} envelopes, {check.rejected} rejected)"
                    f" | devices {up}/{len(config.devices)} | outbox {envelopes}"
                )
                last = (now, read, verified)
    return check
