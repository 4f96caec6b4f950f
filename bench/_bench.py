"""What the benchmark scripts share: free ports, a Mosquitto of their own, child processes, an
identifier node with the benchmark's gateways registered.

Imported as ``_bench`` by the scripts in this folder (a script's folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(directory: Path, settings: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A Mosquitto on a free 127.0.0.1 port with ``settings`` added to its config."""
    port = free_port()
    conf = directory / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", *settings]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.025)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def in_child(script: str, role: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --role ROLE`` in a process of its own; its last stdout line is the JSON
    result (a measurement must not share this process's GIL or memory)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
    try:
        out = subprocess.run(
            [sys.executable, script, "--role", role, "--payload", f.name],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(f.name)
    return dict(json.loads(out.stdout.splitlines()[-1]))


def spawn(
    script: str, role: str, payload: dict[str, Any], files: list[str]
) -> subprocess.Popen[str]:
    """Start ``script --role ROLE`` in the background (a simulator, a server), its payload in
    a temporary file that is added to ``files`` for the caller to delete; stdout is a pipe."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
    files.append(f.name)
    return subprocess.Popen(
        [sys.executable, script, "--role", role, "--payload", f.name],
        stdout=subprocess.PIPE,
        text=True,
    )


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux ``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that across ``execve``, so a child started
    by a parent of 300 MB reports at least 300 MB whatever it uses itself.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def registered_node(
    dsn: str, firm: str, gateways: Mapping[str, tuple[bytes, Sequence[str]]]
) -> AsyncIterator[Any]:
    """An identifier node on ``dsn`` serving 88.709, with every gateway (its raw public key)
    and its devices registered under ``firm``; yields the running node."""
    import identifiers  # noqa: PLC0415

    node_config = identifiers.NodeConfig.model_validate({
        "kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
        "database": {"dsn": dsn, "pool_max": 2}, "authoritative": ["88.709"],
    })  # fmt: skip
    async with identifiers.Node(node_config) as node:
        _, token = await node.registry.create_token("88.709", days=1)
        records = []
        for gateway, (public_key, devices) in gateways.items():
            gw = identifiers.GatewayRecord(enterprise=firm, public_key=public_key)
            records.append((gateway, gw.to_values()))
            records += [
                (d, identifiers.DeviceRecord(enterprise=firm, gateway=gateway).to_values())
                for d in devices
            ]
        async with identifiers.Client(node.url, token=token) as client:
            await client.register(records)
        yield node


class Figures:
    """The figures of one benchmark run, for ``--json FILE`` (what ``bench/run_all`` reads).

    Each figure has a stable ``key`` (``bench.name``), a label, a value and its unit, and where
    the benchmark measured one in the same run, the baseline it is compared with and the
    ratio. The printed text stays the human-readable form; this is the machine-readable one.
    """

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.started = time.time()
        self.load_before = os.getloadavg()
        self.figures: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(  # noqa: PLR0917 - reads like a table row
        self,
        name: str,
        label: str,
        value: float,
        unit: str,
        baseline: float | None = None,
        baseline_label: str | None = None,
    ) -> None:
        figure: dict[str, Any] = {
            "key": f"{self.bench}.{name}", "label": label, "value": value, "unit": unit,
        }  # fmt: skip
        if baseline is not None:
            figure |= {
                "baseline": baseline,
                "baseline_label": baseline_label,
                "ratio": value / baseline if baseline else None,
            }
        self.figures.append(figure)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def write(self, path: str | None) -> None:
        """Write the JSON file, if ``path`` is given (``--json`` was)."""
        if not path:
            return
        doc = {
            "bench": self.bench,
            "argv": sys.argv[1:],
            "started": self.started,
            "seconds": time.time() - self.started,
            "load_before": self.load_before,
            "load_after": os.getloadavg(),
            "figures": self.figures,
            "notes": self.notes,
        }
        Path(path).write_text(json.dumps(doc, indent=1, default=float) + "\n", encoding="utf-8")


def add_json_option(parser: Any) -> None:
    parser.add_argument(
        "--json", metavar="FILE", help="also write the figures as JSON (read by bench/run_all)"
    )
