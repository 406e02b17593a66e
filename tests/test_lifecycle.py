"""Clean process lifecycles: every command that starts child processes stops all of them
on SIGTERM, SIGINT and its own crash (SIGKILL). Each command runs as a real subprocess in
its own session; once it serves, the test records its process tree (psutil), signals the
command's process alone and finds no survivor. The stop times are printed (run with -s).

The building blocks (agentcycle._processes) are tested first with small Python children;
the commands that load the model are marked slow, the rarer command x signal pairs heavy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from agentcycle import _processes
from agentcycle.serving.server import free_port

PY = sys.executable
SLEEPER = "import time\nwhile True: time.sleep(1)"


def _sig_name(sig: int) -> str:
    return signal.Signals(sig).name


# -- helpers ---------------------------------------------------------------------------
def _living(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie is dead: the container's pid 1 may never reap)."""
    found = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait(condition: Callable[[], bool], timeout: float, what: str,
          process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
    pytest.fail(f"{what} within {timeout:.0f}s (exit {process and process.poll()}): {tail}")


def _stop(process: subprocess.Popen, tree: list[psutil.Process], sig: int,
          within: float = 30.0, strays: bool = True) -> tuple[float, list[psutil.Process]]:
    """Send ``sig`` to the command alone; the seconds until it and its whole recorded
    tree are gone, and the survivors after ``within`` seconds (``strays``: any process
    with this test's data dir counts; off while another command still uses it)."""
    started = time.monotonic()
    process.send_signal(sig)
    everyone = [psutil.Process(process.pid), *tree]
    deadline = started + within
    while time.monotonic() < deadline:
        process.poll()
        if not _living(everyone):
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    survivors = _living(tree)
    if strays:
        survivors += [p for p in _strays() if p.pid not in {t.pid for t in tree}]
    for proc in survivors:  # never leave them running, whatever the assertion says
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return took, survivors


def _strays() -> list[psutil.Process]:
    """Any process but this one with this test's data dir in its environment: one the
    command started after its tree was recorded would show here."""
    home = os.environ.get("AGENTCYCLE_HOME")
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and proc.environ().get("AGENTCYCLE_HOME") == home:
                found.append(proc)
    return _living(found)


def _names(procs: list[psutil.Process]) -> list[str]:
    names = []
    for proc in procs:
        try:
            names.append(" ".join(proc.cmdline()[:4]))
        except psutil.Error:
            names.append(str(proc.pid))
    return names


def _launch(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``agentcycle ARGS`` in its own session, so signals reach the command alone."""
    with open(log, "wb") as out:
        return subprocess.Popen([PY, "-m", "agentcycle", *args], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **env},
                                preexec_fn=_terminal_signals)


def _script(tmp_path: Path, body: str) -> subprocess.Popen:
    path = tmp_path / f"script_{time.monotonic_ns()}.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.Popen([PY, str(path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_terminal_signals)


def _terminal_signals() -> None:
    """A program started from a terminal: SIGINT and SIGHUP at their defaults even where
    the test run ignores them (nohup, a shell's `cmd &`), since a program must leave an
    ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# -- the building blocks -------------------------------------------------------------------
_PARENT = """
    import sys, time
    from agentcycle._processes import spawn
    CHILD = '''
    import sys, time
    from agentcycle._processes import spawn
    spawn([sys.executable, "-c", "import time\\\\nwhile True: time.sleep(1)"])
    print("ready", flush=True)
    while True: time.sleep(1)
    '''
    child = spawn([sys.executable, "-c", CHILD], stdout=sys.stdout)
    time.sleep(0.1)
    {extra}
    print("up", flush=True)
    while True: time.sleep(1)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=_sig_name)
def test_children_and_grandchildren_die_with_a_parent_that_cleans_nothing_up(tmp_path, sig):
    """SIGKILL: the kernel's parent-death signal; SIGTERM/SIGHUP to a program that does
    not handle them: the handler the first spawn installed stops the tree, then dies."""
    parent = _script(tmp_path, _PARENT.format(extra=""))
    assert {parent.stdout.readline().strip() for _ in range(2)} == {"ready", "up"}
    tree = _tree(parent.pid)
    assert len(tree) == 2, _names(tree)
    took, survivors = _stop(parent, tree, sig, within=10)
    assert not survivors, _names(survivors)
    assert parent.wait(5) == -sig  # it still dies of the signal
    assert took < 5


def test_a_child_spawned_from_a_short_lived_thread_outlives_the_thread(tmp_path):
    """The parent-death signal follows the thread that forked: spawn forks from a
    thread that lives as long as the process, so the child survives its caller's thread
    and still dies with the process."""
    parent = _script(tmp_path, """
        import sys, threading, time
        from agentcycle._processes import spawn
        box = []
        t = threading.Thread(target=lambda: box.append(spawn(
            [sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"])))
        t.start(); t.join()
        print(box[0].pid, flush=True)
        while True: time.sleep(1)
    """)
    child = psutil.Process(int(parent.stdout.readline()))
    time.sleep(1.0)  # the thread is gone: a death signal tied to it would have fired
    assert _living([child]), "the child died with the thread that asked for it"
    _, survivors = _stop(parent, [child], signal.SIGKILL, within=10)
    assert not survivors


def test_the_fork_race_is_closed():
    """A parent that died before the child's prctl: the child sees a parent pid that is
    not the one it was forked from, and signals itself, even where the parent has a Python
    handler for that signal (the CLI's stop_on_sigterm) that the fork copied."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        child = subprocess.Popen([PY, "-c", SLEEPER],
                                 preexec_fn=_processes._DieWithParent(signal.SIGTERM, 1))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert child.wait(10) == -signal.SIGTERM


def test_stop_tree_escalates_to_sigkill_after_the_grace_period(tmp_path):
    stubborn = ("import signal, sys, time, subprocess\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "subprocess.Popen([sys.executable, '-c', 'import signal, time\\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\nwhile True: time.sleep(1)'])\n"
                "print('up', flush=True)\n"
                "while True: time.sleep(1)\n")
    process = _processes.spawn([PY, "-c", stubborn], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "up"
    tree = [psutil.Process(process.pid), *_tree(process.pid)]
    assert len(tree) == 2
    took = _processes.stop_tree(process, grace=1.0)
    assert 1.0 <= took < 4 and not _living(tree)
    assert process.returncode == -signal.SIGKILL


def test_stop_tree_of_a_polite_tree_is_quick_and_reaps():
    process = _processes.spawn([PY, "-c", SLEEPER])
    time.sleep(0.3)
    took = _processes.stop_tree(process, grace=10)
    assert took < 2 and process.returncode == -signal.SIGTERM
    assert process.pid not in _processes._tracked


def test_run_stops_the_whole_tree_on_timeout():
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        _processes.run([PY, "-c", code], timeout=1.5)
    assert time.monotonic() - started < 6
    grandchild = int(timed_out.value.stdout)  # started without any help from us
    assert not _processes.alive(grandchild)
    done = _processes.run([PY, "-c", "import sys; print(sys.stdin.read().upper())"],
                          input="hello", timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "HELLO")


# -- commands without the model: the NATS worker --------------------------------------
_AGENT = """
from agentcycle.agents import AgentResult, BaseAgent


class Echo(BaseAgent):
    kind = "echo"

    async def arun(self, task, **options):
        return AgentResult(answer=task, kind="echo")


def make(settings=None, options=None):
    return Echo()
"""


@pytest.fixture
def echo_agent(tmp_path) -> str:
    path = tmp_path / "echo_agent.py"
    path.write_text(_AGENT)
    return f"{path}:make"


def _start_worker(tmp_path: Path, agent: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"worker_{time.monotonic_ns()}.log"
    process = _launch(["multi", "worker", "--agent", agent, "--no-trace"], log)
    _wait(lambda: "serving pool" in log.read_text(errors="replace"), 60,
          "the worker did not serve", process, log)
    return process, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=_sig_name)
def test_multi_worker_leaves_no_nats_server_behind(tmp_path, echo_agent, sig):
    process, log = _start_worker(tmp_path, echo_agent)
    tree = _tree(process.pid)
    assert any("nats-server" in name for name in _names(tree)), _names(tree)
    took, survivors = _stop(process, tree, sig, within=30)  # CI under load
    print(f"\nstop multi worker {signal.Signals(sig).name}: {took:.2f} s")
    assert not survivors, _names(survivors)


def test_a_crashed_worker_keeps_nats_for_another_one(tmp_path, echo_agent):
    """Two workers on one data dir share the embedded server: SIGKILL of the one that
    started it leaves it serving the other; SIGTERM of the other stops it."""
    first, _ = _start_worker(tmp_path, echo_agent)
    nats = [p for p in _tree(first.pid) if "nats-server" in " ".join(p.cmdline())]
    second, log = _start_worker(tmp_path, echo_agent)
    _stop(first, [], signal.SIGKILL, within=10, strays=False)
    time.sleep(1.5)  # three rounds of the keeper: the second worker still holds it
    assert _living(nats), "the crash of one user stopped the server for the other"
    took, survivors = _stop(second, nats + _tree(second.pid), signal.SIGTERM, within=15)
    assert not survivors, _names(survivors)


# -- commands that load the model ----------------------------------------------------------
def _start_app(tmp_path: Path) -> tuple[subprocess.Popen, float]:
    port = free_port()
    log = tmp_path / "app.log"
    started = time.monotonic()
    process = _launch(["app", "--port", str(port)], log)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    _wait(healthy, 300, "the app did not serve", process, log)
    return process, time.monotonic() - started


def _app_case(tmp_path: Path, sig: int) -> None:
    process, up = _start_app(tmp_path)
    tree = _tree(process.pid)
    assert any("serving.gate" in name for name in _names(tree)), _names(tree)
    took, survivors = _stop(process, tree, sig)
    print(f"\nstop app {signal.Signals(sig).name}: {took:.2f} s (up after {up:.0f} s)")
    assert not survivors, _names(survivors)


@pytest.mark.slow
def test_app_stopped_by_sigterm_leaves_no_model_server_behind(tmp_path, base_model_dir):
    """The issue's case: what Kubernetes and process managers send."""
    _app_case(tmp_path, signal.SIGTERM)


@pytest.mark.heavy  # the killed-parent path: test_serving's killed parent (slow)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=_sig_name)
def test_app_leaves_no_model_server_behind(tmp_path, base_model_dir, sig):
    _app_case(tmp_path, sig)


def _has(tree: list[psutil.Process], *needles: str) -> bool:
    names = " | ".join(_names(tree))
    return all(needle in names for needle in needles)


def _running_case(tmp_path: Path, args: list[str], needles: tuple[str, ...], sig: int,
                  label: str, timeout: float = 300) -> None:
    """A command that works and exits by itself: signal it once its children run."""
    log = tmp_path / "command.log"
    process = _launch(args, log)
    seen: list[psutil.Process] = []

    def children_up() -> bool:
        seen[:] = _tree(process.pid)
        return _has(seen, *needles)
    try:
        _wait(children_up, timeout, f"{label} did not start {needles}", process, log)
    finally:
        if process.poll() is not None:
            _stop(process, seen, signal.SIGKILL, within=1)
    time.sleep(0.5)  # let it get going with them
    tree = _tree(process.pid) or seen
    took, survivors = _stop(process, tree, sig)
    print(f"\nstop {label} {signal.Signals(sig).name}: {took:.2f} s")
    assert not survivors, _names(survivors)


@pytest.mark.slow
def test_agent_run_multi_stops_workers_nats_and_model(tmp_path, base_model_dir):
    _running_case(tmp_path, ["agent", "run", "multi", "What is a lease? What is rent?"],
                  ("serving.gate", "nats-server"), signal.SIGTERM, "agent run multi")


@pytest.mark.heavy
@pytest.mark.parametrize("kind", ["rag", "tools", "workflow"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=_sig_name)
def test_agent_run_each_kind(tmp_path, base_model_dir, kind, sig):
    _running_case(tmp_path, ["agent", "run", kind, "How long may a deposit be kept?"],
                  ("serving.gate",), sig, f"agent run {kind}")


@pytest.mark.heavy
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=_sig_name)
def test_serve_leaves_no_engine_behind(tmp_path, base_model_dir, sig):
    _running_case(tmp_path, ["serve", str(base_model_dir), "--port", str(free_port())],
                  ("serving.gate", "transformers"), sig, "serve")


@pytest.mark.heavy
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=_sig_name)
def test_demo_leaves_no_model_server_behind(tmp_path, base_model_dir, sig):
    _running_case(tmp_path, ["demo", "--test-limit", "2", "--no-tools"],
                  ("serving.gate", "transformers"), sig, "demo", timeout=600)


def test_thread_helper_is_not_leaking_threads():
    """The spawner thread is one daemon thread, however many spawns ask for it."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(_processes.spawn(
        [PY, "-c", SLEEPER]))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        spawners = [t for t in threading.enumerate() if t.name == "agentcycle-spawner"]
        assert len(spawners) == 1 and spawners[0].daemon
    finally:
        for process in results:
            _processes.stop_tree(process, grace=5)


@pytest.mark.heavy
def test_a_stream_in_flight_does_not_hold_the_model_server_stop_up(base_model_dir):
    """The gate gives an open stream 5 s after SIGTERM, then stops its engine: the stop
    does not wait for the generation to end nor fall back to SIGKILL (15 s)."""
    from agentcycle.serving import ModelServer

    server = ModelServer(base_model_dir, api_key="k", model_name="base").start()
    tree = [psutil.Process(server._process.pid), *_tree(server._process.pid)]
    body = {"model": "base", "max_tokens": 4000, "stream": True, "temperature": 1.0,
            "messages": [{"role": "user", "content": "Write a very long story."}]}
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{server.base_url}/chat/completions", json=body,
            headers={"Authorization": "Bearer k"}) as response:
        next(response.iter_lines())  # generating
        took = server.stop()
    print(f"\nstop ModelServer with a stream open: {took:.2f} s")
    assert took < 12 and not _living(tree), _names(_living(tree))


def test_the_cli_leaves_ignored_signals_ignored():
    """`nohup agentcycle app` (SIGHUP ignored) must not stop when the terminal closes."""
    code = ("import signal\n"
            "from agentcycle.cli._common import stop_on_sigterm\n"
            "stop_on_sigterm()\n"
            "print(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN,\n"
            "      signal.getsignal(signal.SIGTERM).__name__)\n")
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert done.stdout.split() == ["True", "interrupt"], done.stderr


def test_what_loads_while_the_model_server_starts_overlaps_it_and_a_failure_stops_it(
        settings, base_model_dir, monkeypatch):
    """``local_backends(meanwhile=...)`` runs the caller's loading while the engine
    starts (its process is already there), and a failure in it leaves no server."""
    from agentcycle.rag.session import local_backends

    monkeypatch.setenv("AGENTCYCLE_CHAT_MODEL", str(base_model_dir))
    servers: list[psutil.Process] = []
    before = {p.pid for p in _tree(os.getpid())}  # the session's own model server, if any

    def fail_while_starting():
        servers.extend(p for p in _tree(os.getpid()) if p.pid not in before
                       and "agentcycle.serving.gate" in " ".join(p.cmdline()))
        raise RuntimeError("embedder failed to load")

    with pytest.raises(RuntimeError, match="embedder failed"):
        with local_backends(settings, str(base_model_dir), meanwhile=fail_while_starting):
            pytest.fail("the block must not run")
    assert servers, "the server was launched before the caller's loading ran"
    _wait(lambda: not _living(servers), 20, "the model server to stop")
