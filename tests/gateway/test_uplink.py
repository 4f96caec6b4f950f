"""The uplink against a broker address that drops every packet (a silent network cut)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway._outbox import Outbox
from gateway._uplink import MqttSettings, Uplink


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A 127.0.0.1 port whose listener never accepts and whose accept queue is full: Linux
    drops further SYNs without an answer, so a connect hangs as across a cut cable."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except TimeoutError:
            yield port
            return
        pytest.skip("this kernel answers a connect to a full accept queue")
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_a_connect_into_a_silent_path_never_blocks_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho's network thread sits in a blocking TCP connect (its own 5 s timeout) when the
    path drops packets; stopping that client joins the thread. The uplink gives up on the
    CONNACK sooner and must stop the client off the event loop, or every reconnect attempt of
    a network cut would freeze the gateway's polling for seconds."""
    joined_on: list[int] = []
    original = mqtt.Client.loop_stop

    def loop_stop(self: mqtt.Client) -> mqtt.MQTTErrorCode:
        joined_on.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(mqtt.Client, "loop_stop", loop_stop)
    loop_thread = threading.get_ident()
    outbox = Outbox(tmp_path / "outbox.db").open()
    try:
        with silent_port() as port:
            settings = MqttSettings("127.0.0.1", port, keepalive=2, connect_timeout=0.5)
            async with Uplink(outbox, settings, backoff_max=0.5) as uplink:
                async with asyncio.timeout(60):
                    while not joined_on:  # noqa: ASYNC110 - paho's thread has no event
                        await asyncio.sleep(0.05)
                assert uplink.stats.last_error == "no CONNACK within 0.5 s"
    finally:
        outbox.close()
    assert loop_thread not in joined_on


async def test_stopping_while_connecting_into_a_silent_path_never_blocks_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway stopping while its uplink waits for a CONNACK that cannot come: the stop
    joins paho's thread (in its blocking connect) off the event loop as well."""
    joined_on: list[int] = []
    original = mqtt.Client.loop_stop

    def loop_stop(self: mqtt.Client) -> mqtt.MQTTErrorCode:
        joined_on.append(threading.get_ident())
        return original(self)

    monkeypatch.setattr(mqtt.Client, "loop_stop", loop_stop)
    outbox = Outbox(tmp_path / "outbox.db").open()
    try:
        with silent_port() as port:
            settings = MqttSettings("127.0.0.1", port, keepalive=2, connect_timeout=60)
            async with Uplink(outbox, settings) as uplink:
                await asyncio.sleep(0.5)  # the CONNACK wait has begun (60 s: never ends here)
                assert not uplink.stats.connected
    finally:
        outbox.close()
    assert len(joined_on) == 1  # the stop at exit
    assert threading.get_ident() not in joined_on
