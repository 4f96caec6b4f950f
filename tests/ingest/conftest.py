"""Fixtures of the ingest tests: an identifier node with registered gateways and devices, a
private Mosquitto per test (ingest subscribes to all of ``gt/v1/#``, so it must not share a
broker with other tests), a publisher, and gateways' signed chains built by hand.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _services import MosquittoBroker, count, fetch, ingest_config, wait_until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
import identifiers

FIRM = "88.709.911"
ENTERPRISE = f"{FIRM}/firm"
#: 2025-11-24 16:00:00 UTC in µs
T0 = 1_764_000_000_000_000


class Chain:
    """A gateway's envelopes, numbered and chained as a gateway does."""

    def __init__(self, gateway: str, key: Ed25519PrivateKey | None = None) -> None:
        self.gateway = gateway
        self.key = key or Ed25519PrivateKey.generate()
        self.seq = 0
        self.prev = p.GENESIS

    @property
    def public(self) -> bytes:
        return p.public_key_bytes(self.key)

    def _next(self, **fields: Any) -> p.SignedEnvelope:
        env = p.Envelope(self.gateway, self.seq + 1, self.prev, T0 + self.seq, **fields)
        self.seq, self.prev = env.seq, env.digest
        return p.sign(env, self.key)

    def data(self, device: str, samples: list[tuple[str, int, Any]]) -> p.SignedEnvelope:
        wire = tuple(p.Sample(tag, ts, value) for tag, ts, value in samples)
        return self._next(device=device, samples=wire)

    def loss(self, first: int, last: int, samples: int, reason: str) -> p.SignedEnvelope:
        return self._next(loss=p.Loss(first, last, samples, reason))


def message(signed: p.SignedEnvelope) -> tuple[str, bytes]:
    return p.envelope_topic(signed.envelope), p.encode_json(signed)


class Subscriber:
    """A plain MQTT subscriber to ``gt/v1/#`` that keeps (topic, payload) of what it sees."""

    def __init__(self, port: int, into: list[tuple[str, bytes]]) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"spy-{uuid.uuid4().hex[:8]}"
        )
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(p.SUBSCRIPTION, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: into.append((msg.topic, msg.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A real MQTT client publishing at QoS 1 and waiting for each PUBACK."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}"
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker() as server:
        yield server


@pytest.fixture
def publisher(broker: MosquittoBroker) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    yield pub
    pub.close()


@pytest.fixture
async def node(pg_dsn: str) -> AsyncIterator[identifiers.Node]:
    config = identifiers.NodeConfig.model_validate(
        {
            "kind": "identifiers",
            "listen": {"host": "127.0.0.1", "port": 0},
            "database": {"dsn": pg_dsn, "pool_max": 2},
            "authoritative": ["88.709"],
        }
    )
    async with identifiers.Node(config) as running:
        yield running


Register = Callable[..., Any]


@pytest.fixture
async def register(node: identifiers.Node) -> AsyncIterator[Register]:
    """``await register(chain, devices, enterprise=…)``: a gateway's and its devices' records."""
    _, token = await node.registry.create_token("88.709", days=1, label="ingest tests")
    async with identifiers.Client(node.url, token=token) as client:

        async def run(
            chain: Chain, devices: list[str], enterprise: str = ENTERPRISE, gateway: str = ""
        ) -> None:
            records = [
                (
                    chain.gateway,
                    identifiers.GatewayRecord(
                        enterprise=enterprise, public_key=chain.public
                    ).to_values(),
                )
            ]
            records += [
                (
                    dev,
                    identifiers.DeviceRecord(
                        enterprise=enterprise, gateway=gateway or chain.gateway
                    ).to_values(),
                )
                for dev in devices
            ]
            await client.register(records)

        yield run


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers of this file, for test modules (which cannot import a conftest)."""
    return SimpleNamespace(
        Chain=Chain, message=message, Subscriber=Subscriber, ingest_config=ingest_config,
        wait_until=wait_until, fetch=fetch, count=count, FIRM=FIRM, ENTERPRISE=ENTERPRISE, T0=T0,
    )  # fmt: skip
