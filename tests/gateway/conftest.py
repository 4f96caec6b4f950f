"""Fixtures of the gateway tests: a real MQTT subscriber that collects what a gateway sends."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _services import MosquittoBroker, MqttServer
from _services._base import make_server_dir

import gateway.protocol as p


class Subscriber:
    """A real MQTT subscriber with a persistent session, collecting what the gateway sends."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def envelopes(self) -> list[p.SignedEnvelope]:
        with self.lock:
            msgs = list(self.messages)
        out = []
        for topic, payload, _ in msgs:
            if p.parse_topic(topic).kind == "status":
                continue
            signed = p.decode_json(payload)
            p.check_topic(topic, signed.envelope)
            out.append(signed)
        return out

    def statuses(self) -> list[tuple[dict[str, Any], bool]]:
        with self.lock:
            msgs = list(self.messages)
        return [(json.loads(pl), r) for t, pl, r in msgs if p.parse_topic(t).kind == "status"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe() -> Iterator[Callable[[MqttServer, str], Subscriber]]:
    """``subscribe(broker, topic_filter)``: a started subscriber, closed after the test."""
    made: list[Subscriber] = []

    def start(server: MqttServer, topic: str) -> Subscriber:
        made.append(Subscriber(server.host, server.port, topic))
        return made[-1]

    yield start
    for sub in made:
        sub.close()


@pytest.fixture
def durable_broker() -> Iterator[MosquittoBroker]:
    """A private Mosquitto that keeps sessions and queued messages across a stop and start.

    Its store lives in the broker's own directory, which the broker's user may write (as root,
    Mosquitto switches to the ``mosquitto`` user, who cannot write into pytest's tmp_path).
    """
    directory = make_server_dir("mqtt-durable")
    durable = ["allow_anonymous true", "persistence true", f"persistence_location {directory}/"]
    with MosquittoBroker(directory=directory, listener_config=durable) as broker:
        yield broker
