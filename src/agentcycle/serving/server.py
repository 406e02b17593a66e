"""Start, health-check and stop a real inference engine for a model directory.

CPU: ``transformers serve`` (continuous batching, no compile step). It accepts any
API key and pins the model name to its path, so an authenticating gate
(:mod:`agentcycle.serving.gate`) stands in front of it: it refuses requests without
the key and maps a short model name to the path. GPU with vLLM installed: ``vllm
serve``, which enforces ``--api-key`` and ``--served-model-name`` itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import httpx

from agentcycle._hardware import has_cuda
from agentcycle._processes import spawn, stop_tree
from agentcycle.errors import ServiceError
from agentcycle.models.bundled import check_model_dir
from agentcycle.serving.adapters import check_adapters, vllm_lora_args

Engine = Literal["transformers", "vllm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def choose_engine(requested: str = "auto") -> Engine:
    """vLLM when it is installed and a GPU is visible, else transformers."""
    if requested in ("transformers", "vllm"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ServiceError(f"unknown engine '{requested}': use auto, transformers or vllm")
    if shutil.which("vllm") and has_cuda():
        return "vllm"
    return "transformers"


def wait_for_health(
    base_url: str, timeout: float = 180.0, process: subprocess.Popen | None = None
) -> None:
    """Poll ``<base_url>/health`` until it answers 200; fail fast if the process dies."""
    deadline = time.monotonic() + timeout
    url = base_url.rstrip("/").removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"the model server exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise ServiceError(f"the model server at {base_url} was not healthy after {timeout:.0f}s")


class ModelServer:
    """An OpenAI-compatible server for one model directory, as a context manager.

    >>> with ModelServer(model_dir, api_key="k") as server:
    ...     server.base_url, server.model_name
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        model_name: str | None = None,
        engine: str = "auto",
        log_file: Path | None = None,
        adapters: Mapping[str, str | Path] | None = None,
    ):
        """``adapters``: ``{name: PEFT adapter dir}`` served unmerged over this base, each
        chosen by ``model=name`` (the base is then ``model_name``, default ``base``)."""
        self.model_dir = check_model_dir(model_dir)
        self.host = host
        self.port = port or free_port()
        self.api_key = api_key
        self.model_name = model_name or ("base" if adapters else self.model_dir.name.lower())
        self.adapters = check_adapters(adapters or {}, self.model_name)
        self.engine = choose_engine(engine)
        self.log_file = log_file
        self._process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        if self.engine == "vllm":
            cmd = ["vllm", "serve", str(self.model_dir), "--host", self.host,
                   "--port", str(self.port), "--served-model-name", self.model_name,
                   *vllm_lora_args(self.adapters)]
            return cmd + (["--api-key", self.api_key] if self.api_key else [])
        return [sys.executable, "-m", "agentcycle.serving.gate", str(self.model_dir),
                "--host", self.host, "--port", str(self.port), "--model-name", self.model_name,
                "--parent-pid", str(os.getpid()),
                *(f"--adapter={name}={path}" for name, path in self.adapters.items())]

    @property
    def model_names(self) -> list[str]:
        """Every name this server answers: the base's, then each adapter's."""
        return [self.model_name, *self.adapters]

    def start(self, timeout: float = 180.0) -> ModelServer:
        """Launch the server and wait until it answers (see :meth:`launch`)."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> ModelServer:
        """Spawn the server and return at once: the caller may load what it needs while
        the engine starts (seconds on a CPU), then call :meth:`wait_ready`."""
        env = dict(os.environ)
        if self.api_key:  # by environment, so the key never shows in `ps`
            env["AGENTCYCLE_SERVE_API_KEY"] = self.api_key
        with contextlib.ExitStack() as files:
            out = (files.enter_context(open(self.log_file, "ab")) if self.log_file
                   else subprocess.DEVNULL)
            # Its own process group (stop() ends the engine too), and it dies with us.
            self._process = spawn(self.command(), env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 180.0) -> ModelServer:
        """Wait until the launched server is healthy and has answered one request; on
        failure it is stopped."""
        try:
            wait_for_health(self.base_url, timeout=timeout, process=self._process)
            self.warm_up()
        except BaseException:
            self.stop()
            raise
        return self

    def warm_up(self) -> None:
        """One tiny request: the engine's first generation pays seconds of set-up that
        would otherwise land on (and skew the latency of) the first real request."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            httpx.post(f"{self.base_url}/chat/completions", headers=headers, timeout=120,
                       json={"model": self.model_name, "max_tokens": 2,
                             "messages": [{"role": "user", "content": "hi"}]})
        except httpx.HTTPError as exc:
            raise ServiceError(f"the model server at {self.base_url} failed its first "
                               f"request: {exc}") from None

    def stop(self) -> float:
        """Stop the server and its engine (SIGKILL after 15 s); the seconds it took."""
        process, self._process = self._process, None
        if process is None:
            return 0.0
        return stop_tree(process, grace=15)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
