"""GGUF export of the real bundled model: f16 and q8_0, checked by loading the file back
with transformers and comparing logits; bad input and a full disk leave no file."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

import pytest

from agentcycle.errors import ConfigError, ModelError
from agentcycle.finetune import export
from agentcycle.finetune.export import export_gguf


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_bad_input_is_one_clear_error(tmp_path, base_model_dir):
    with pytest.raises(ConfigError, match="unknown GGUF type 'q4'"):
        export_gguf(base_model_dir, tmp_path / "m.gguf", "q4")
    (tmp_path / "taken.gguf").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        export_gguf(base_model_dir, tmp_path / "taken.gguf", "f16")
    assert (tmp_path / "taken.gguf").read_text() == "keep me"
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="llama-architecture models only"):
        export_gguf(other, tmp_path / "b.gguf")
    with pytest.raises(ModelError, match="no such directory"):
        export_gguf(tmp_path / "nope", tmp_path / "n.gguf")


def test_permutation_matches_llama_cpp():
    """llama.cpp's permute, on a toy: each head's two rotary halves interleave."""
    import numpy as np

    weights = np.arange(8)[:, None].repeat(2, 1)  # 2 heads x 4 rows
    assert export._permute(weights, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.fixture(scope="session")
def f16(base_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "smol-f16.gguf"
    return export_gguf(base_model_dir, out, "f16", verify=True)


@pytest.mark.slow
def test_f16_round_trip(f16):
    import gguf

    check = f16.check
    assert check.ok and check.tokenizer_matches and check.positions > 100
    assert check.max_abs_diff < 0.1 and check.top1_agreement >= 0.99
    assert f16.tokenizer.startswith("copied from") and f16.tensors == 272
    assert 250e6 < f16.bytes < 290e6  # 135M params x 2 bytes (norms in f32)
    assert not _leftovers(f16.path.parent)
    reader = gguf.GGUFReader(f16.path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_F16)


@pytest.mark.slow
def test_q8_0_through_the_cli(base_model_dir, tmp_path):
    from typer.testing import CliRunner

    from agentcycle.cli.main import app

    out = tmp_path / "smol-q8_0.gguf"
    result = CliRunner().invoke(app, ["export", "gguf", str(base_model_dir), "--out", str(out),
                                      "--type", "q8_0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["check"]["ok"] and data["check"]["top1_agreement"] >= 0.9
    assert data["check"]["max_abs_diff"] > 0.1  # 8 bits lose more than f16 (0.04 here)
    assert data["bytes"] == out.stat().st_size < 160e6  # ~1.06 bytes per weight, f16: 271 MB


@pytest.mark.slow
@pytest.mark.heavy  # make test-all
def test_a_wrong_file_fails_the_check_and_is_not_left(base_model_dir, tmp_path, monkeypatch):
    """Without the Q/K permutation the file loads but answers differently: the round trip
    must catch that, and nothing may appear at the target."""
    monkeypatch.setattr(export, "_permute", lambda weights, heads: weights)
    out = tmp_path / "broken.gguf"
    with pytest.raises(ModelError, match="beyond the f16 tolerance"):
        export_gguf(base_model_dir, out, "f16", verify=True)
    assert not out.exists() and not _leftovers(tmp_path)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (50 << 20, 50 << 20))


@pytest.mark.slow
def test_out_of_space_is_one_error_line_and_no_half_file(base_model_dir, tmp_path):
    """A real failing write: the OS refuses bytes past 50 MB (RLIMIT_FSIZE)."""
    out = tmp_path / "big.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "agentcycle", "export", "gguf", str(base_model_dir),
         "--out", str(out), "--no-verify"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert proc.returncode == 1, proc.stderr
    assert "not enough disk space" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.slow
@pytest.mark.heavy  # make test-all
def test_tokenizer_built_without_a_base_gguf(base_model_dir, tmp_path):
    """The gguf vocab helpers' route: tokens, merges and specials from tokenizer.json."""
    from transformers import AutoTokenizer

    out = tmp_path / "own-vocab.gguf"
    result = export_gguf(base_model_dir, out, "f16", base_gguf=None)
    assert result.tokenizer == "built from tokenizer.json"
    ours = AutoTokenizer.from_pretrained(base_model_dir)
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    text = "<|im_start|>user\nA tenant's deposit: 1,250.00 EUR?<|im_end|>\n"
    assert theirs(text)["input_ids"] == ours(text)["input_ids"]
    assert theirs.eos_token == ours.eos_token
