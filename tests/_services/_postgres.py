"""PostgreSQL for tests: an admin DSN given from outside, or a throwaway cluster of our own.

Either way a test gets a database of its own (``database()``), created from the admin
connection and dropped afterwards with ``WITH (FORCE)`` so a leaked pool cannot keep it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo, sql

from ._base import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Server,
    ServiceError,
    free_port,
    is_root,
    make_server_dir,
    system_user,
)

DSN_ENV = "GUANTONG_TEST_PG_DSN"
INSTALL_HINT = (
    "install the Debian package 'postgresql' (scripts/setup does it), or set "
    f"{DSN_ENV} to an admin DSN of a running server, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
)

#: throwaway data: no fsync, so safe against a killed server but not a crashed machine
#: (never use these settings elsewhere). synchronous_commit stays on: with it off, a commit
#: acknowledged just before ``kill()`` could vanish, and fault tests check exactly that.
TEST_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "full_page_writes": "off",
    # CREATE DATABASE (once per test) writes the template into the WAL: a young cluster
    # would zero-fill a new 16 MB segment every second test
    "wal_init_zero": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}


def with_database(dsn: str, name: str) -> str:
    """The DSN ``dsn`` pointing at database ``name``, in the same style (URL or key=value)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return urlsplit(dsn)._replace(path="/" + name).geturl()
    return conninfo.make_conninfo(dsn, dbname=name)


class PostgresServer(Server):
    """What tests use of any PostgreSQL: ``admin_dsn``, ``version`` and fresh databases."""

    kind = "PostgreSQL"
    admin_dsn: str

    @contextmanager
    def database(self, prefix: str = "t") -> Iterator[str]:
        """A new empty database for the block; yields its DSN and drops it afterwards."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(self.admin_dsn, name)
        finally:
            if self.managed and not self.running:  # a fault test stopped it and failed
                self.start()
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def _read_version(self) -> None:
        with psycopg.connect(self.admin_dsn, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        self.version = str(row[0]) if row else "unknown"

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


class ExternalPostgres(PostgresServer):
    """A running server named by an admin DSN (``GUANTONG_TEST_PG_DSN``)."""

    managed = False

    def __init__(self, admin_dsn: str) -> None:
        info = conninfo.conninfo_to_dict(admin_dsn)
        super().__init__(
            host=str(info.get("host", "localhost")),
            port=int(info.get("port", 5432)),
            directory=None,
        )
        self.admin_dsn = admin_dsn
        try:
            self._read_version()
        except psycopg.Error as exc:
            raise ServiceError(f"cannot connect to {DSN_ENV}={admin_dsn}: {exc}") from exc

    def _running(self) -> bool:
        return True


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: pg_config, Debian's layout, then PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    ]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ServiceError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL_HINT}")


class PostgresCluster(PostgresServer):
    """A throwaway cluster (``initdb`` + ``pg_ctl``) on a free 127.0.0.1 port.

    initdb and postgres refuse to run as root, so as root both run as the ``postgres`` system
    user (``runuser``) in a directory that user owns.
    """

    def __init__(self, bindir: Path | None = None, port: int | None = None) -> None:
        self.bindir = bindir or find_bindir()
        owner = system_user("postgres") if is_root() else None
        if is_root() and owner is None:
            raise ServiceError(
                "running as root, the test cluster must run as the 'postgres' user, "
                f"which does not exist: {INSTALL_HINT}"
            )
        host = "127.0.0.1"
        super().__init__(host=host, port=port or free_port(host), directory=make_server_dir("pg"))
        self.admin_dsn = f"postgresql://postgres@{host}:{self.port}/postgres"
        self._data = self.directory / "data"
        self._as: list[str] = []
        if owner is not None:
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, timeout: float) -> None:
        cmd = [*self._as, str(self.bindir / argv[0]), *argv[1:]]
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=self.directory,
            )
        except subprocess.TimeoutExpired as exc:
            raise self._fail(f"{argv[0]} {argv[1]} took over {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise self._fail(
                f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()}"
            )

    def _initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", timeout=120,
        )  # fmt: skip
        settings = {
            **TEST_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
        }
        with (self._data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# guantong test cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self) -> None:
        if not (self._data / "PG_VERSION").exists():
            self._initdb()
        # the log lives next to the data dir, in the directory the server user owns
        self._run(
            "pg_ctl", "start", "-D", str(self._data), "-l", str(self.log_path),
            "-w", "-t", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5,
        )  # fmt: skip
        self._wait_until(self._accepts_connections, "accepting connections")
        self._read_version()

    def _stop(self) -> None:
        self._run(
            "pg_ctl", "stop", "-D", str(self._data), "-m", "fast",
            "-w", "-t", str(int(STOP_TIMEOUT)), timeout=STOP_TIMEOUT + 5,
        )  # fmt: skip

    def _kill(self) -> None:
        if self._running():
            self._run("pg_ctl", "stop", "-D", str(self._data), "-m", "immediate", timeout=10)

    def _running(self) -> bool:
        # checked before every test, so no pg_ctl call: is the pid in postmaster.pid alive?
        # (a stale file after a crash names a dead process)
        try:
            pid = int((self._data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True
