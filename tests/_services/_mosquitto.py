"""MQTT for tests: a broker given by URL, or Mosquitto processes of our own.

Two Mosquitto variants: the plain one (anonymous, one 127.0.0.1 listener) and the secured
one (TLS with client certificates from a test CA, a password file made with
``mosquitto_passwd`` and an ACL file confining each user to its own topic subtree).
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from ._base import (
    Server,
    ServiceError,
    accepts_tcp,
    chown_tree,
    free_port,
    is_root,
    make_server_dir,
    system_user,
)
from ._pki import CertificateAuthority

URL_ENV = "GUANTONG_TEST_MQTT_URL"
INSTALL_HINT = (
    "install the Debian package 'mosquitto' (scripts/setup does it), "
    f"or set {URL_ENV}=mqtt://HOST:PORT for the tests that need a plain broker"
)

#: FINDINGS: the default of 1000 silently drops QoS 1 messages for a slow subscriber
MAX_QUEUED_MESSAGES = 1_000_000


def find_binary(name: str) -> Path:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/sbin")
    if not found:
        raise ServiceError(f"'{name}' not found: {INSTALL_HINT}")
    return Path(found)


class MqttServer(Server):
    kind = "MQTT broker"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class ExternalMqtt(MqttServer):
    """A running broker named by ``GUANTONG_TEST_MQTT_URL`` (``mqtt://host:port``)."""

    managed = False

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ServiceError(f"{URL_ENV}={url!r}: expected mqtt://HOST:PORT")
        super().__init__(host=parts.hostname, port=parts.port or 1883, directory=None)
        if not accepts_tcp(self.host, self.port):
            raise ServiceError(f"{URL_ENV}={url}: nothing accepts connections there")
        self.version = sys_broker_version(self.host, self.port)

    def _running(self) -> bool:
        return True


def sys_broker_version(host: str, port: int, timeout: float = 3.0) -> str:
    """The broker's ``$SYS/broker/version`` (Mosquitto publishes it retained)."""
    got: list[str] = []
    done = threading.Event()

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe("$SYS/broker/version")

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload.decode("utf-8", "replace"))
        done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError:
        return "unknown"
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else "unknown (no $SYS/broker/version)"


_VERSION_CACHE: dict[Path, str] = {}


def mosquitto_version(binary: Path) -> str:
    if binary not in _VERSION_CACHE:
        out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"mosquitto version (\S+)", out)
        _VERSION_CACHE[binary] = match.group(1) if match else "unknown"
    return _VERSION_CACHE[binary]


class MosquittoBroker(MqttServer):
    """A ``mosquitto`` process with a generated config on a free 127.0.0.1 port.

    ``listener_config`` adds lines after the ``listener`` line (TLS, authentication).
    As root, Mosquitto drops privileges to its ``user`` setting (default ``mosquitto``) after
    binding: the directory is handed to that user so it can still read its files.
    """

    kind = "Mosquitto"

    def __init__(
        self,
        *,
        listener_config: list[str] | None = None,
        directory: Path | None = None,
        port: int | None = None,
        binary: Path | None = None,
    ) -> None:
        host = "127.0.0.1"
        self.binary = binary or find_binary("mosquitto")
        super().__init__(
            host=host, port=port or free_port(host), directory=directory or make_server_dir("mqtt")
        )
        self.version = mosquitto_version(self.binary)
        self.listener_config = listener_config or ["allow_anonymous true"]
        self.config_path = self.directory / "mosquitto.conf"

    def _config(self) -> str:
        lines = [
            "# guantong test broker",
            "per_listener_settings false",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        ]
        if is_root():
            lines.append("user mosquitto" if system_user("mosquitto") else "user root")
        lines += [f"listener {self.port} {self.host}", *self.listener_config]
        return "\n".join(lines) + "\n"

    def _start(self) -> None:
        self.config_path.write_text(self._config(), encoding="utf-8")
        if is_root() and (owner := system_user("mosquitto")):
            chown_tree(self.directory, owner)
        self._spawn(
            [str(self.binary), "-c", str(self.config_path)],
            lambda: accepts_tcp(self.host, self.port),
            "listening",
        )


@dataclass(frozen=True)
class MqttUser:
    """One account of the secured broker, with its client certificate and its subtree."""

    username: str
    password: str
    cert_path: Path
    key_path: Path
    #: the topic filter this user may use (``guantong/<username>/#``), ``None`` for readers
    subtree: str | None


@dataclass
class SecureMqtt:
    """Everything a test needs to talk to the secured broker."""

    broker: MosquittoBroker
    ca_path: Path
    users: dict[str, MqttUser]
    acl_path: Path
    #: the ACL line that confines every user to its own subtree
    acl_rule: str
    #: a client certificate from a CA the broker does not trust
    rogue: MqttUser
    password_path: Path = field(repr=False)

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def ssl_context(self, user: str | MqttUser) -> ssl.SSLContext:
        """A client TLS context trusting the test CA and presenting ``user``'s certificate."""
        account = self.users[user] if isinstance(user, str) else user
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_path))
        context.load_cert_chain(str(account.cert_path), str(account.key_path))
        return context

    def client(self, user: str | MqttUser, client_id: str = "", **kwargs: object) -> mqtt.Client:
        """A paho 2 client set up with ``user``'s TLS context and credentials (not connected)."""
        account = self.users[user] if isinstance(user, str) else user
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)  # type: ignore[arg-type]
        client.tls_set_context(self.ssl_context(account))
        client.username_pw_set(account.username, account.password)
        return client


#: users of the secured broker: gateways write only under their own subtree, ingest reads all
SECURE_USERS = ("gw-alpha", "gw-beta")
READER = "ingest"
ACL_RULE = "pattern readwrite guantong/%u/#"


def secure_mosquitto(port: int | None = None) -> SecureMqtt:
    """Build the PKI, password and ACL files, and start a TLS-only Mosquitto on them."""
    binary = find_binary("mosquitto")
    passwd_tool = find_binary("mosquitto_passwd")
    directory = make_server_dir("mqtts")
    pki = directory / "pki"
    pki.mkdir()
    ca = CertificateAuthority(pki)
    server_cert = ca.issue("mosquitto-server", server=True)
    users: dict[str, MqttUser] = {}
    for name in (*SECURE_USERS, READER):
        files = ca.issue(name)
        users[name] = MqttUser(
            username=name,
            password=f"pw-{name}-secret",
            cert_path=files.cert,
            key_path=files.key,
            subtree=None if name == READER else f"guantong/{name}/#",
        )
    rogue_files = CertificateAuthority(pki, name="Untrusted CA").issue("rogue")
    rogue = MqttUser(
        "gw-alpha", users["gw-alpha"].password, rogue_files.cert, rogue_files.key, None
    )

    password_path = directory / "passwd"
    password_path.write_text(
        "".join(f"{u.username}:{u.password}\n" for u in users.values()), encoding="utf-8"
    )
    password_path.chmod(0o600)
    hashed = subprocess.run(
        [passwd_tool, "-U", str(password_path)], capture_output=True, text=True, check=False
    )
    if hashed.returncode != 0:
        raise ServiceError(f"mosquitto_passwd -U failed: {hashed.stderr.strip()}")

    acl_path = directory / "acl"
    acl_path.write_text(
        "# every user reads and writes its own subtree only\n"
        f"{ACL_RULE}\n"
        f"user {READER}\n"
        "topic read guantong/#\n",
        encoding="utf-8",
    )
    acl_path.chmod(0o600)

    broker = MosquittoBroker(
        directory=directory,
        port=port,
        binary=binary,
        listener_config=[
            f"cafile {ca.cert_path}",
            f"certfile {server_cert.cert}",
            f"keyfile {server_cert.key}",
            "require_certificate true",
            "allow_anonymous false",
            f"password_file {password_path}",
            f"acl_file {acl_path}",
        ],
    )
    broker.role = "TLS with client certificates, passwords, ACL"
    return SecureMqtt(
        broker=broker,
        ca_path=ca.cert_path,
        users=users,
        acl_path=acl_path,
        acl_rule=ACL_RULE,
        rogue=rogue,
        password_path=password_path,
    )
