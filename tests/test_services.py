"""The shared test servers are real: versions, round trips, refusals, restarts."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import psycopg
import pytest
from _services import (
    BOOTSTRAP_ENV,
    URL_ENV,
    KafkaNamespace,
    MosquittoBroker,
    MqttServer,
    PostgresServer,
    SecureMqtt,
    ServiceError,
    Services,
    TansuBroker,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from paho.mqtt.reasoncodes import ReasonCode

WAIT = 10.0
VERSION = re.compile(r"\d+\.\d+")


@dataclass
class Session:
    """A connected paho 2 client whose callbacks land in queues a test can wait on."""

    client: mqtt.Client
    connacks: queue.Queue[ReasonCode] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[ReasonCode]] = field(default_factory=queue.Queue)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)

    def connack(self) -> ReasonCode:
        return self.connacks.get(timeout=WAIT)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        granted = self.subacks.get(timeout=WAIT)
        assert not any(code.is_failure for code in granted), granted

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=WAIT)


@contextmanager
def session(client: mqtt.Client, host: str, port: int) -> Iterator[Session]:
    s = Session(client)
    client.on_connect = lambda _c, _u, _f, code, _p: s.connacks.put(code)
    client.on_subscribe = lambda _c, _u, _m, codes, _p: s.subacks.put(codes)
    client.on_message = lambda _c, _u, msg: s.messages.put(msg)
    client.connect(host, port)
    client.loop_start()
    try:
        yield s
    finally:
        client.disconnect()
        client.loop_stop()


def plain_client() -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)


# PostgreSQL -----------------------------------------------------------------------------
def test_postgres_is_real_and_the_database_is_the_tests_own(
    pg_server: PostgresServer, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        version, database = conn.execute("SELECT version(), current_database()").fetchone()
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO probe VALUES (1, '贯通'), (2, 'two')")
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT id, note FROM probe ORDER BY id").fetchall()
    assert version.startswith("PostgreSQL ")
    assert VERSION.search(pg_server.version)
    assert pg_server.version.split()[0] in version
    assert database != "postgres"
    assert rows == [(1, "贯通"), (2, "two")]


def test_a_test_database_is_dropped_afterwards(pg_server: PostgresServer) -> None:
    with pg_server.database() as dsn, psycopg.connect(dsn) as conn:
        (name,) = conn.execute("SELECT current_database()").fetchone()
    with psycopg.connect(pg_server.admin_dsn) as admin:
        left = admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name])
        assert left.fetchone() == (0,)


def test_postgres_restart_and_kill_keep_port_and_data_and_clients_reconnect(
    pg_server: PostgresServer, pg_dsn: str
) -> None:
    if not pg_server.managed:
        pytest.skip("the PostgreSQL given by GUANTONG_TEST_PG_DSN cannot be restarted")
    port = pg_server.port
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1)")
        pg_server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO kept VALUES (2)")
        # a commit acknowledged just before a crash survives it
        pg_server.kill()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    pg_server.start()
    assert pg_server.port == port
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT v FROM kept ORDER BY v").fetchall() == [(1,), (2,)]


# MQTT, plain ------------------------------------------------------------------------------
def test_mqtt_qos1_round_trip(mqtt_broker: MqttServer, mqtt_topic_prefix: str) -> None:
    topic = mqtt_topic_prefix + "round-trip"
    with (
        session(plain_client(), mqtt_broker.host, mqtt_broker.port) as sub,
        session(plain_client(), mqtt_broker.host, mqtt_broker.port) as pub,
    ):
        assert sub.connack() == 0
        assert pub.connack() == 0
        sub.subscribe(topic)
        pub.publish(topic, b"\x00sample\xff")
        msg = sub.next_message()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"\x00sample\xff", 1)
    assert VERSION.search(mqtt_broker.version)


def test_mosquitto_restart_keeps_port_and_clients_reconnect(
    mqtt_broker: MqttServer, mqtt_topic_prefix: str
) -> None:
    if not mqtt_broker.managed:
        pytest.skip("the broker given by GUANTONG_TEST_MQTT_URL cannot be restarted")
    topic = mqtt_topic_prefix + "after-restart"
    port = mqtt_broker.port
    client = plain_client()
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    with session(client, mqtt_broker.host, mqtt_broker.port) as s:
        assert s.connack() == 0
        mqtt_broker.restart()
        assert s.connack() == 0  # paho's loop reconnected by itself
        s.subscribe(topic)
        s.publish(topic, b"back")
        assert s.next_message().payload == b"back"
    assert mqtt_broker.port == port


def test_a_session_server_left_stopped_is_started_for_the_next_test(
    services: Services, mqtt_broker: MqttServer
) -> None:
    if not mqtt_broker.managed:
        pytest.skip("the broker given by GUANTONG_TEST_MQTT_URL cannot be stopped")
    mqtt_broker.stop()
    assert not mqtt_broker.running
    services.ensure_running()  # what the autouse fixture does before each test
    assert mqtt_broker.running
    with session(plain_client(), mqtt_broker.host, mqtt_broker.port) as s:
        assert s.connack() == 0


@pytest.fixture
def private_mosquitto() -> Iterator[MosquittoBroker]:
    """A Mosquitto of this test's own, to kill or break without disturbing the others."""
    try:
        broker = MosquittoBroker()
    except ServiceError as exc:
        if os.environ.get(URL_ENV):
            pytest.skip(f"no mosquitto binary for a private broker: {exc}")
        raise
    with broker:
        yield broker


def test_a_killed_broker_starts_again_on_its_port(private_mosquitto: MosquittoBroker) -> None:
    port = private_mosquitto.port
    private_mosquitto.kill()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    private_mosquitto.start()
    assert private_mosquitto.port == port
    with session(plain_client(), "127.0.0.1", port) as s:
        assert s.connack() == 0


def test_a_server_that_cannot_start_says_why_with_its_log(
    private_mosquitto: MosquittoBroker,
) -> None:
    taken = private_mosquitto.port  # held by the running private broker
    broker = MosquittoBroker(port=taken)
    try:
        with pytest.raises(ServiceError, match="exited with code") as failed:
            broker.start()
        assert "Address already in use" in str(failed.value)
        assert str(broker.log_path) in str(failed.value)
        broker.close()
        assert broker.log_path.exists()  # kept for whoever debugs the failure
    finally:
        shutil.rmtree(broker.directory, ignore_errors=True)


# MQTT, secured ----------------------------------------------------------------------------
def test_secure_round_trip_with_client_certificate_and_password(mqtt_secure: SecureMqtt) -> None:
    host, port = mqtt_secure.host, mqtt_secure.port
    with (
        session(mqtt_secure.client("ingest"), host, port) as reader,
        session(mqtt_secure.client("gw-alpha"), host, port) as gateway,
    ):
        assert reader.connack() == 0
        assert gateway.connack() == 0
        reader.subscribe("guantong/#")
        gateway.publish("guantong/gw-alpha/envelope", b"signed")
        msg = reader.next_message()
        tls_version = gateway.client.socket().version()  # type: ignore[union-attr]
    assert (msg.topic, msg.payload) == ("guantong/gw-alpha/envelope", b"signed")
    assert tls_version in ("TLSv1.2", "TLSv1.3")


def test_secure_broker_refuses_a_wrong_password(mqtt_secure: SecureMqtt) -> None:
    client = mqtt_secure.client("gw-alpha")
    client.username_pw_set("gw-alpha", "not-the-password")
    with session(client, mqtt_secure.host, mqtt_secure.port) as s:
        code = s.connack()
    assert code.is_failure
    assert code.getName() in ("Bad user name or password", "Not authorized")


def test_secure_broker_drops_a_publish_outside_the_users_subtree(mqtt_secure: SecureMqtt) -> None:
    assert mqtt_secure.acl_rule == "pattern readwrite guantong/%u/#"
    host, port = mqtt_secure.host, mqtt_secure.port
    with (
        session(mqtt_secure.client("ingest"), host, port) as reader,
        session(mqtt_secure.client("gw-alpha"), host, port) as gateway,
    ):
        assert reader.connack() == 0
        assert gateway.connack() == 0
        reader.subscribe("guantong/#")
        # QoS 1 from one client is delivered in order: if the broker let the forged publish
        # through, it would arrive before the marker
        gateway.publish("guantong/gw-beta/envelope", b"forged")
        gateway.publish("guantong/gw-alpha/marker", b"marker")
        first = reader.next_message()
    assert (first.topic, first.payload) == ("guantong/gw-alpha/marker", b"marker")
    assert reader.messages.empty()


def tls_read(context: ssl.SSLContext, host: str, port: int) -> bytes:
    """Handshake and read one byte; the server closing without a word is an error too."""
    with (
        socket.create_connection((host, port), timeout=WAIT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        data = tls.recv(1)
    if not data:
        raise ConnectionResetError("closed without a word")
    return data


def test_secure_broker_refuses_a_certificate_from_another_ca(mqtt_secure: SecureMqtt) -> None:
    context = ssl.create_default_context(cafile=str(mqtt_secure.ca_path))
    context.load_cert_chain(str(mqtt_secure.rogue.cert_path), str(mqtt_secure.rogue.key_path))
    # TLS 1.3 reports the rejected client certificate on the first read, TLS 1.2 in the handshake
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_read(context, mqtt_secure.host, mqtt_secure.port)


# Kafka ----------------------------------------------------------------------------------
async def test_kafka_produce_and_consume_through_a_consumer_group(
    kafka_namespace: KafkaNamespace,
) -> None:
    topic = kafka_namespace.topic("samples")
    sent = {f"device-{i % 3}".encode(): b"" for i in range(3)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_namespace.bootstrap)
    await producer.start()
    try:
        for i in range(30):
            key = f"device-{i % 3}".encode()
            sent[key] += b"%d," % i
            await producer.send_and_wait(topic, b"%d" % i, key=key)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_namespace.bootstrap,
        group_id=kafka_namespace.group("ingest"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: dict[bytes, bytes] = {}
    try:
        received = 0
        while received < 30:
            batches = await consumer.getmany(timeout_ms=int(WAIT * 1000))
            assert batches, "no records within the wait"
            for records in batches.values():
                for record in records:
                    got[record.key] = got.get(record.key, b"") + record.value + b","
                    received += 1
        await consumer.commit()
        partitions = consumer.assignment()
        committed = {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    assert got == sent  # per key, in the order produced
    assert sum(committed.values()) == 30
    assert all(tp.topic == topic for tp in partitions)
    assert isinstance(next(iter(partitions)), TopicPartition)
    assert VERSION.search(kafka_namespace.broker.version) or not kafka_namespace.broker.managed


async def test_a_private_tansu_restarts_on_its_port_and_forgets_everything() -> None:
    try:
        broker = TansuBroker()
    except ServiceError as exc:
        if os.environ.get(BOOTSTRAP_ENV):
            pytest.skip(f"no Tansu binary for a private broker: {exc}")
        raise
    with broker:
        port = broker.port
        offsets = []
        for _ in range(2):
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                # one key, one partition (auto-created topics have several)
                await producer.send_and_wait("events", b"x", key=b"k")
                sent = await producer.send_and_wait("events", b"y", key=b"k")
            finally:
                await producer.stop()
            offsets.append(sent.offset)
            await asyncio.to_thread(broker.restart)
        assert broker.port == port
    assert offsets == [1, 1]  # memory storage: the topic starts again from offset 0
