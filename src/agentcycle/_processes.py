"""Child processes that never outlive the process that started them: the one home for
spawning and stopping them (the model server and its engine, the embedded NATS server's
keeper, a crew runner).

Three layers, so no exit path orphans a child:

1. **Normal exit, exceptions, Ctrl-C**: the owner's ``with`` block or ``stop()`` calls
   :func:`stop_tree` (SIGTERM to the child, its process group and every descendant
   recorded before the signal, SIGKILL to what is left after a grace period). What is
   still tracked at interpreter exit is stopped by ``atexit``.
2. **SIGTERM / SIGHUP to a program that does not handle them** (a script, a notebook
   kernel): the first :func:`spawn` installs a handler that stops every tracked child
   (and runs :func:`on_terminate` callbacks), then dies of the signal as it would have.
   The CLI turns them into Ctrl-C instead (``cli._common.stop_on_sigterm``).
3. **The owner crashes or is SIGKILLed**: on Linux each child asks the kernel for a
   parent-death signal (``PR_SET_PDEATHSIG``) between fork and exec, and rechecks its
   parent pid for the race where the parent died first. The kernel sends it when the
   *thread* that forked exits, so children are forked from the main thread or from
   one spawner thread that lives as long as the process.

A process shared by several owners (the embedded NATS server) outlives any one of them:
:func:`keep_while_used` keeps it while someone holds a shared ``flock``. Only the
standard library (and psutil, lazily): the keeper runs this file as a script.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_LIBC: Any = None
_tracked: dict[int, subprocess.Popen] = {}
_callbacks: list[Callable[[], None]] = []
_lock = threading.Lock()
_spawn_queue: Any = None  # queue.Queue of (start, Future) for the spawner thread
_exit_hook = False
_signal_hooks = False


def _libc() -> Any:
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


class _DieWithParent:
    """Runs in the child between fork and exec: ask for ``sig`` when the parent dies."""

    def __init__(self, sig: int, parent_pid: int):
        self.sig, self.parent_pid, self.libc = int(sig), parent_pid, _libc()

    def __call__(self) -> None:
        if self.libc is not None:
            self.libc.prctl(_PR_SET_PDEATHSIG, self.sig, 0, 0, 0)
        if os.getppid() != self.parent_pid:  # the parent died before prctl took effect
            if self.libc is not None:  # a handler the parent installed must not catch it
                self.libc.signal(self.sig, 0)  # SIG_DFL
            os.kill(os.getpid(), self.sig)


def spawn(command: Sequence[str], *, death_signal: int | None = signal.SIGTERM,
          new_session: bool = True, track: bool = True, **popen: Any) -> subprocess.Popen:
    """Start ``command`` so that it dies with this process.

    ``death_signal``: what the kernel sends the child when this process dies (Linux);
    ``None`` for a child that must outlive us (a shared server's keeper).
    ``new_session``: its own session and process group, so a Ctrl-C in the terminal
    reaches only us (we stop it in order) and :func:`stop_tree` can signal its group.
    ``track``: stopped at interpreter exit and on an unhandled SIGTERM if still running.
    Other keyword arguments go to :class:`subprocess.Popen`.
    """
    if death_signal is not None and _libc() is not None:
        popen["preexec_fn"] = _DieWithParent(death_signal, os.getpid())
    popen["start_new_session"] = new_session

    def start() -> subprocess.Popen:
        return subprocess.Popen(list(command), **popen)

    if death_signal is None or threading.current_thread() is threading.main_thread():
        process = start()
    else:  # the death signal follows the forking thread: fork from one that lives on
        process = _in_spawner_thread(start)
    if track:
        with _lock:
            _tracked[process.pid] = process
        _install_handlers()
    return process


def _in_spawner_thread(start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
    """Run ``start`` in a daemon thread that lives as long as the process."""
    import queue

    global _spawn_queue
    with _lock:
        if _spawn_queue is None:
            _spawn_queue = queue.Queue()
            threading.Thread(target=_spawner_loop, args=(_spawn_queue,), daemon=True,
                             name="agentcycle-spawner").start()
    done: Future = Future()
    _spawn_queue.put((start, done))
    return done.result()


def _spawner_loop(jobs: Any) -> None:
    while True:
        start, done = jobs.get()
        try:
            done.set_result(start())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            done.set_exception(exc)


def untrack(process: subprocess.Popen | int) -> None:
    with _lock:
        _tracked.pop(process if isinstance(process, int) else process.pid, None)


def run(command: Sequence[str], *, input: str | None = None, timeout: float | None = None,
        **popen: Any) -> subprocess.CompletedProcess:
    """Like :func:`subprocess.run` with captured text output, but the child dies with
    us, and a timeout or an interrupt stops its whole tree (``TimeoutExpired`` raised)."""
    process = spawn(command, stdin=subprocess.PIPE if input is not None else None,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = process.communicate(input, timeout=timeout)
    except BaseException:
        stop_tree(process, grace=2)
        raise
    untrack(process)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# -- stopping ---------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """``pid`` runs (a zombie does not: this container's pid 1 may never reap it)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` now (children, grandchildren, ...)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _group_members(pgid: int) -> list[int]:
    import psutil

    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


def stop_tree(process: subprocess.Popen | int, *, grace: float = 10.0,
              sig: int = signal.SIGTERM) -> float:
    """Stop a process and everything it started; return the seconds it took.

    ``sig`` goes to the process, to every descendant found before the signal (one that
    left the group too) and to the process group it leads, if any; SIGKILL follows for
    what still runs after ``grace`` seconds. A :class:`~subprocess.Popen` is reaped; a
    bare pid must be one that cannot have been reused (a child not yet waited for).
    """
    started = time.monotonic()
    pid = process if isinstance(process, int) else process.pid
    untrack(pid)
    reaped = isinstance(process, subprocess.Popen) and process.poll() is not None
    # A reaped child's pid may name another process by now; its group's id cannot.
    mine = set() if reaped else {pid, *descendants(pid)}
    targets = (mine | set(_group_members(pid))) - {os.getpid()}
    _signal_all(pid, targets, sig)
    if not _wait_gone(process, targets, started + grace):
        _signal_all(pid, targets, signal.SIGKILL)
        _wait_gone(process, targets, time.monotonic() + 5)
    _signal_group(pid, signal.SIGKILL)  # stragglers started in its group after we looked
    if isinstance(process, subprocess.Popen):
        # It may have turned zombie just after the last poll(): reap it now, or its
        # returncode stays None and the zombie stays.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)
    return time.monotonic() - started


def _wait_gone(process: subprocess.Popen | int, targets: set[int], deadline: float) -> bool:
    while True:
        if isinstance(process, subprocess.Popen):
            process.poll()  # reap it, or it stays a zombie
        if not any(alive(p) for p in targets):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _signal_all(pgid: int, targets: set[int], sig: int) -> None:
    _signal_group(pgid, sig)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)


def _signal_group(pgid: int, sig: int) -> None:
    """Signal the process group ``pgid``: only ever one that ``pgid``'s process created
    (the kernel never reuses a pid that still names a group), never our own."""
    if pgid == os.getpgid(0):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all(grace: float = 5.0) -> None:
    """Stop every tracked child (interpreter exit, an unhandled SIGTERM)."""
    for callback in list(_callbacks):
        with contextlib.suppress(Exception):
            callback()
    with _lock:
        processes = list(_tracked.values())
    for process in processes:
        with contextlib.suppress(Exception):
            stop_tree(process, grace=grace)


def on_terminate(callback: Callable[[], None]) -> None:
    """Run ``callback`` before the tracked children are stopped at exit or on SIGTERM."""
    if callback not in _callbacks:
        _callbacks.append(callback)
    _install_handlers()


def forget(callback: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _callbacks.remove(callback)


def _install_handlers() -> None:
    global _exit_hook, _signal_hooks
    with _lock:
        if not _exit_hook:
            _exit_hook = True
            atexit.register(stop_all)
    if _signal_hooks or threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    _signal_hooks = True
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:  # the program does not handle it
            signal.signal(sig, _die_after_cleanup)


def _die_after_cleanup(signum: int, frame: Any) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


# -- a child shared by several processes: stopped when the last one leaves --------------
@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block."""
    fd = open_lock(path, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)


def open_lock(path: Path, mode: int) -> int:
    """A file descriptor holding a ``flock`` (``LOCK_SH`` or ``LOCK_EX``) on ``path``: the
    kernel releases it when the descriptor closes, even on SIGKILL."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, mode)
    return fd


def try_lock(path: Path) -> int | None:
    """An exclusive lock on ``path`` if nobody holds one, else None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def keep_while_used(command: Sequence[str], users: Path, serial: Path, *,
                    every: float = 0.5, **popen: Any) -> subprocess.Popen:
    """Start ``command`` under a keeper process that stops it once nobody holds a shared
    lock on ``users`` (checked every ``every`` seconds under the exclusive ``serial``
    lock, which users take while they join or leave).

    The keeper has its own session and no death signal, so the crash of any one user
    (SIGKILL included: the kernel drops its lock) leaves the child serving the others,
    and the crash of the last one stops it within ``every`` seconds. The child dies
    with the keeper. Returns the keeper's Popen; the child's pid is not known here.
    """
    # -P: run this file as a script without its folder on sys.path (no package import)
    keeper = [sys.executable, "-P", str(Path(__file__).resolve()), "keep", str(users),
              str(serial), str(every), "--", *command]
    return spawn(keeper, death_signal=None, new_session=True, track=False, **popen)


def _keep(command: list[str], users: Path, serial: Path, every: float) -> int:
    child = spawn(command, new_session=False, track=False)

    def leave(signum: int, frame: Any) -> None:
        stop_tree(child, grace=10)
        sys.exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, leave)
    while child.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(every)  # returns at once when the child exits
            break
        try:
            busy = try_lock(serial)  # None: a user joins or leaves now; look again later
            if busy is None:
                continue
            try:
                last = try_lock(users)
                if last is not None:  # no user left, and none can join while we hold serial
                    stop_tree(child, grace=10)
                    os.close(last)
                    return 0
            finally:
                os.close(busy)
        except OSError:  # its folder is gone: nobody can use it any more
            stop_tree(child, grace=10)
            return 0
    return child.returncode or 0


if __name__ == "__main__" and sys.argv[1:2] == ["keep"]:
    _users, _serial, _every, _dashes, *_command = sys.argv[2:]
    sys.exit(_keep(_command, Path(_users), Path(_serial), float(_every)))
