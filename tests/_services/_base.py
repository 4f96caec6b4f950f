"""What every real test server shares: ports, child processes, readiness, logs, cleanup.

A server object owns one directory (config, data, ``server.log``) and one port; ``stop()``
and ``start()`` keep both, so a fault test can take a broker away and bring it back where
the clients expect it. Servers the suite did not start (given by an environment variable)
are *external*: they cannot be stopped, and tests that need to stop one check ``managed``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, ClassVar, Self

logger = logging.getLogger(__name__)

#: keep each server's directory (config, data, log) after the session
KEEP_ENV = "GUANTONG_TEST_KEEP_DIRS"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServiceError(RuntimeError):
    """A test server could not be found, started or stopped; the message says what to do."""


def load_conftest(name: str, relative: str) -> ModuleType:
    """Load another test directory's conftest (``relative`` to ``tests/``) as module ``name``,
    so that a suite can register its fixtures under their own names (a conftest cannot be
    imported)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def listens_on(pid: int, host: str, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on ``host:port`` (Linux ``/proc``).

    A connect test alone can be answered by whoever else got the port first.
    """
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return not os.path.exists("/proc/net/tcp")  # no /proc: cannot tell, trust the caller
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


def is_root() -> bool:
    return os.geteuid() == 0


def system_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def make_server_dir(kind: str) -> Path:
    """A fresh directory in the system temp dir (not pytest's, which other users cannot enter)."""
    return Path(tempfile.mkdtemp(prefix=f"guantong-test-{kind}-"))


def chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


class ChildProcess:
    """One server process we started, its output appended to a log file."""

    def __init__(
        self, argv: Sequence[str], *, log_path: Path, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def spawn(self) -> None:
        self._log = self.log_path.open("ab")
        # a session of its own: Ctrl-C on pytest must not kill servers before the fixtures
        # that stop them (and would leave a half-shut broker during teardown)
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT, *, abrupt: bool = False) -> None:
        """SIGTERM (SIGKILL if ``abrupt``), SIGKILL after ``timeout``; waits until gone."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if abrupt else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %.0f s: killing it", self.argv[0], timeout)
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class Server:
    """Base of the test servers: lifecycle, readiness, description, last-resort cleanup.

    Subclasses implement ``_start`` (launch, then return once ready), ``_stop`` and
    ``_running``; ``start``/``stop`` are idempotent.
    """

    kind: ClassVar[str] = "server"
    #: ``True`` when the suite started this server and may stop, start and restart it
    managed: bool = True
    #: what sets this instance apart, for the report (e.g. "TLS, passwords, ACL")
    role: str = ""

    def __init__(self, *, host: str, port: int, directory: Path | None) -> None:
        self.host = host
        self.port = port
        self.directory = directory
        self.version = "unknown"
        self._closed = False

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        self._require_managed("start")
        if not self._running():
            self._start()
            _LIVE.add(self)
        return self

    def stop(self) -> None:
        self._require_managed("stop")
        if self._running():
            self._stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._running()

    def kill(self) -> None:
        """Stop abruptly, like a crash or power cut (SIGKILL; PostgreSQL: immediate mode)."""
        self._require_managed("kill")
        if self._running():
            self._kill()

    def close(self) -> None:
        """Stop for good and remove the directory (unless a start failed or KEEP_ENV is set)."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        if self.managed:
            with contextlib.suppress(ServiceError):
                self.stop()
            if self.directory and not os.environ.get(KEEP_ENV) and not self._failed:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def log_path(self) -> Path | None:
        return self.directory / "server.log" if self.directory else None

    def describe(self) -> str:
        notes = ["started by the suite" if self.managed else "external"]
        notes += [self.role] if self.role else []
        return f"{self.kind} {self.version} at {self.host}:{self.port} ({', '.join(notes)})"

    # for subclasses --------------------------------------------------------------------
    _failed = False
    #: the server process, for servers that run as a child of the test process
    _process: ChildProcess | None = None

    def _start(self) -> None:
        raise NotImplementedError

    def _spawn(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        what: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start ``argv`` as the server process (log in ``server.log``) and wait for ``ready``."""
        if self.directory is None or self.log_path is None:
            raise ServiceError(f"{self.kind}: a server process needs a directory of its own")
        process = ChildProcess(argv, log_path=self.log_path, cwd=self.directory, env=env)
        self._process = process
        process.spawn()

        def ours_and_ready() -> bool:
            pid = process.pid
            return pid is not None and listens_on(pid, self.host, self.port) and ready()

        try:
            self._wait_until(ours_and_ready, what, exited=process.exit_code)
        except BaseException:
            process.terminate(abrupt=True)
            self._process = None
            raise

    def _stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process = None

    def _kill(self) -> None:
        """Stop without ceremony: for ``kill()`` and as the last resort at interpreter exit."""
        if self._process is not None:
            self._process.terminate(abrupt=True)
            self._process = None

    def _running(self) -> bool:
        return self._process is not None and self._process.running()

    def _require_managed(self, action: str) -> None:
        if not self.managed:
            raise ServiceError(
                f"cannot {action} the external {self.kind} at {self.host}:{self.port}: a test that "
                "stops servers needs one the suite starts itself (unset the environment variable)"
            )

    def _fail(self, what: str) -> ServiceError:
        self._failed = True
        where = f"\n  log {self.log_path}:\n{log_tail(self.log_path)}" if self.log_path else ""
        return ServiceError(f"{self.kind} on {self.host}:{self.port}: {what}{where}")

    def _wait_until(
        self,
        ready: Callable[[], bool],
        what: str,
        *,
        exited: Callable[[], int | None] = lambda: None,
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Poll ``ready`` until it holds; fail fast if the process exits, or at the deadline."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while not ready():
            code = exited()
            if code is not None:
                raise self._fail(f"exited with code {code} before {what}")
            if time.monotonic() > deadline:
                raise self._fail(f"not {what} after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


_LIVE: set[Server] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Servers still running when the interpreter exits (a crash, an interrupted session)."""
    for server in list(_LIVE):
        try:
            server.close()
        except Exception:  # at exit, a kill is all that is left
            with contextlib.suppress(Exception):
                server._kill()
    _LIVE.clear()
