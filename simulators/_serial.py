"""A pseudo-terminal pair made by socat: a serial line without hardware.

The simulator opens one end; the other is linked at the path clients are told to open, as if
an RS-485 adapter were plugged in there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from simulators._exceptions import EndpointError

logger = logging.getLogger(__name__)


class PtyPair:
    """``socat`` joining two pseudo-terminals; ``server_end`` for us, ``client_end`` for them."""

    def __init__(self, name: str, client_link: Path) -> None:
        self.name = name
        self.client_end = client_link
        self._dir: Path | None = None
        self.server_end: Path | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise EndpointError(self.name, "socat is not installed (Debian package 'socat')")
        if self.client_end.is_symlink() or self.client_end.exists():
            raise EndpointError(self.name, f"{self.client_end} exists already")
        self._dir = Path(tempfile.mkdtemp(prefix="guantong-pty-"))
        self.server_end = self._dir / "simulator"
        self._process = await asyncio.create_subprocess_exec(
            socat,
            f"pty,raw,echo=0,link={self.server_end}",
            f"pty,raw,echo=0,link={self.client_end}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        deadline = time.monotonic() + 5.0
        while not (self.server_end.exists() and self.client_end.exists()):
            if self._process.returncode is not None or time.monotonic() > deadline:
                err = b""
                if self._process.stderr is not None and self._process.returncode is not None:
                    err = await self._process.stderr.read()
                await self.stop()
                raise EndpointError(self.name, f"socat did not start: {err.decode().strip()}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._process is not None:
            if self._process.returncode is None:
                self._process.terminate()
                try:
                    await asyncio.wait_for(self._process.wait(), 5)
                except TimeoutError:
                    self._process.kill()
                    await self._process.wait()
            self._process = None
        with contextlib.suppress(FileNotFoundError):
            if self.client_end.is_symlink():
                self.client_end.unlink()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
