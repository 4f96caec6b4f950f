"""Fixtures of the ``guantong`` tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A demo work directory the PostgreSQL server user can reach (pytest's are root's alone,
    and as root the demo's cluster runs as ``postgres``)."""
    directory = Path(tempfile.mkdtemp(prefix="guantong-demo-test-"))
    directory.chmod(0o755)
    yield directory / "demo"
    shutil.rmtree(directory, ignore_errors=True)
