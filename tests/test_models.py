import shutil

import pytest

from agentcycle.errors import ModelError
from agentcycle.models import (
    bundled_embedding_dir,
    bundled_gguf_path,
    chat_model_dir,
    embedding_model_dir,
)
from agentcycle.settings import Settings


def test_bundled_models_come_from_their_wheels():
    assert bundled_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (bundled_embedding_dir() / "model.safetensors").is_file()


def test_the_gguf_is_converted_once_into_a_servable_hf_directory(base_model_dir):
    assert (base_model_dir / "model.safetensors").is_file()
    assert (base_model_dir / "tokenizer.json").is_file()
    config = (base_model_dir / "config.json").read_text()
    assert '"llama"' in config and "quantization_config" not in config
    before = (base_model_dir / "model.safetensors").stat().st_mtime
    assert chat_model_dir(Settings()) == base_model_dir  # the cache, not a new conversion
    assert (base_model_dir / "model.safetensors").stat().st_mtime == before


def test_a_conversion_killed_midway_leaves_nothing_for_long(tmp_path):
    from agentcycle.models.bundled import convert_gguf

    target = tmp_path / "chat"
    stale = tmp_path / f".convert-{target.name}-x1"  # what a SIGKILL mid-save leaves
    (stale / "model.safetensors").parent.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    other = tmp_path / ".convert-other-model-x2"  # another target's: not ours to remove
    other.mkdir()
    with pytest.raises(OSError):  # the next conversion (this GGUF does not exist)
        convert_gguf(tmp_path / "none.gguf", target)
    assert not stale.exists() and other.exists() and not target.exists()


def test_any_hf_directory_replaces_a_bundled_model(monkeypatch, tmp_path, embedder):
    copy = tmp_path / "my-embedder"
    shutil.copytree(bundled_embedding_dir(), copy)
    monkeypatch.setenv("AGENTCYCLE_EMBEDDING_MODEL", str(copy))
    assert embedding_model_dir(Settings()) == copy.resolve()
    monkeypatch.setenv("AGENTCYCLE_CHAT_MODEL", str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="unknown chat model"):
        chat_model_dir(Settings())


def test_public_api_is_deliberate():
    """Names leave or join the public surface on purpose (httpx keeps the same test)."""
    import agentcycle.agents
    import agentcycle.evals
    import agentcycle.finetune
    import agentcycle.observe
    import agentcycle.rag
    import agentcycle.router
    import agentcycle.serving

    assert agentcycle.__all__ == ["AgentcycleError", "Settings", "__version__"]
    assert agentcycle.agents.__all__ == [
        "Agent", "AgentResult", "BaseAgent", "Source", "Step", "Tool", "ToolAgent",
        "ToolCallRecord", "ToolError", "tool"]
    assert agentcycle.finetune.__all__ == [
        "DiskFullError", "ExportResult", "FinetuneJob", "FinetuneResult", "LoraParams",
        "ModelVersion", "TokenizedExample", "TrainParams", "export_gguf", "finetune",
        "finetune_job_manifest", "promote", "read_jsonl", "register_model",
        "resolve_model_uri", "to_examples", "tokenize_example"]
    for module in (agentcycle.agents, agentcycle.evals, agentcycle.finetune,
                   agentcycle.observe, agentcycle.rag, agentcycle.router, agentcycle.serving):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
        assert sorted(module.__all__) == sorted(set(module.__all__))
