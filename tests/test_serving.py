import httpx
import pytest

from agentcycle.errors import ModelError
from agentcycle.serving import ModelServer, choose_engine


def test_cpu_machine_uses_transformers_serve():
    assert choose_engine("auto") == "transformers"


def test_unknown_model_dir(tmp_path):
    with pytest.raises(ModelError, match="no such directory"):
        ModelServer(tmp_path / "nope")
    with pytest.raises(ModelError, match="no config.json"):
        ModelServer(tmp_path)


def test_key_is_enforced_and_the_api_is_openai_compatible(base_server):
    url = f"{base_server.base_url}/chat/completions"
    body = {"model": "base", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=60)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"

    auth = {"Authorization": "Bearer test-key"}
    response = httpx.post(url, json=body, headers=auth, timeout=60)
    assert response.status_code == 200
    data = response.json()
    assert data["model"] == "base" and data["choices"][0]["message"]["content"]
    assert 0 < data["usage"]["completion_tokens"] <= 8

    models = httpx.get(f"{base_server.base_url}/models", headers=auth, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["base"]
    assert httpx.get(base_server.base_url.removesuffix("/v1") + "/health").status_code == 200

    unknown = httpx.post(url, json={**body, "model": "gpt-9"}, headers=auth, timeout=60)
    assert unknown.status_code == 404 and "gpt-9" in unknown.json()["error"]["message"]


def test_streaming_passes_through(base_server):
    from openai import OpenAI

    client = OpenAI(base_url=base_server.base_url, api_key="test-key")
    stream = client.chat.completions.create(
        model="base", max_tokens=6, stream=True,
        messages=[{"role": "user", "content": "Count to three."}])
    chunks = [c for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and all(c.model == "base" for c in chunks)


def test_serve_command_prints_the_url_and_enforces_the_key(base_model_dir):
    import signal
    import subprocess
    import sys
    import time

    from agentcycle.serving.server import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agentcycle", "serve", str(base_model_dir), "--port", str(port),
         "--api-key", "cli-key", "--model-name", "smol"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.strip() == url or process.poll() is not None:
                break
        assert url in "".join(lines), "".join(lines)
        body = {"model": "smol", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
        assert httpx.post(f"{url}/chat/completions", json=body, timeout=60).status_code == 401
        ok = httpx.post(f"{url}/chat/completions", json=body, timeout=60,
                        headers={"Authorization": "Bearer cli-key"})
        assert ok.status_code == 200 and ok.json()["model"] == "smol"
    finally:
        # SIGTERM to the command alone (what systemd or Kubernetes send): it must stop the
        # engine and the gate it started, not orphan them.
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


@pytest.mark.slow
def test_a_killed_parent_leaves_no_model_server_behind(base_model_dir, tmp_path):
    """SIGKILL gives the parent no chance to stop its server: the gate notices it was
    re-parented and takes the engine down with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from agentcycle.serving import ModelServer\n"
        f"server = ModelServer({str(base_model_dir)!r}).start()\n"
        "print(server._process.pid, flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    gate = int(parent.stdout.readline())
    group = os.getpgid(gate)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _group_alive(group):
        time.sleep(0.5)
    assert not _group_alive(group), "the gate or its engine outlived the killed parent"


def _group_alive(group: int) -> bool:
    """A live (not zombie) process in the group: the test's pid 1 may never reap."""
    from pathlib import Path

    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # fields: state, ppid, pgrp
            return True
    return False
