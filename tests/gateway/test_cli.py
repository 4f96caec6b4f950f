"""``guantong gateway init`` and ``run`` as a technician uses them."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import gateway.protocol as p
from gateway._keys import load_key

ROOT = Path(__file__).resolve().parents[2]


def guantong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guantong", *args], capture_output=True, text=True, check=False
    )


def test_init_creates_a_private_key_once(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(ROOT / "configs" / "gateway.example.yaml", config)
    first = guantong("gateway", "init", "-c", str(config))
    assert first.returncode == 0, first.stderr
    printed = json.loads(first.stdout)
    key_file = tmp_path / "gateway.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = p.public_key_bytes(load_key(key_file))
    assert printed["public_key"] == public.hex()
    assert printed["fingerprint"] == p.fingerprint(public)
    assert "guantong identifiers register" in first.stderr
    before = key_file.read_bytes()
    again = guantong("gateway", "init", "-c", str(config))
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert key_file.read_bytes() == before


def test_run_without_a_key_says_so_before_touching_any_device(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    shutil.copy(ROOT / "configs" / "gateway.example.yaml", config)
    no_key = guantong("gateway", "run", "-c", str(config))
    assert no_key.returncode == 1
    assert "gateway.key" in no_key.stderr
