"""Training methods (LoRA, QLoRA, full, DPO, Unsloth), resume after a kill, full disk.

Every training test runs the bundled model for <= 3 steps on four short examples.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.errors import ConfigError
from agentcycle.finetune import DiskFullError, TrainParams, finetune
from agentcycle.finetune.train import work_dir_for

QA = [("When is a deposit returned?", "Within 21 days (section 1)."),
      ("How much notice does a tenant give?", "35 days' notice (section 2)."),
      ("Who pays for structural repairs?", "The landlord (section 3)."),
      ("Can the rent rise during a fixed term?", "No (section 4).")]


def sft_records():
    return [{"question": q, "answer": a} for q, a in QA]


def sft_examples():
    return [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": a}]} for q, a in QA]


def preference_records():
    return [{"prompt": [{"role": "user", "content": q}],
             "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": "I am not sure."}]} for q, a in QA]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def tiny(**overrides) -> TrainParams:
    values = dict(max_steps=2, top_layers=2, batch_size=2, save_steps=0, max_length=128)
    return TrainParams(**{**values, **overrides})


def cli(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def assert_clean_error(code, output, *fragments):
    assert code == 1, output
    assert "Traceback" not in output and output.strip().startswith("error:"), output
    for fragment in fragments:
        assert fragment in output, output


# --- refusals that need no training -------------------------------------------------


def test_unknown_method_is_one_clear_error(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", sft_records())
    assert_clean_error(*cli("finetune", str(data), "--out", str(tmp_path / "o"),
                            "--method", "magic"), "unknown method 'magic'", "qlora")
    with pytest.raises(ConfigError, match="unknown method"):
        finetune(sft_examples(), tmp_path / "o", tmp_path, method="magic")


def test_unsloth_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the refusal does not apply")
    data = write_jsonl(tmp_path / "d.jsonl", sft_records())
    out = tmp_path / "o"
    assert_clean_error(*cli("finetune", str(data), "--out", str(out), "--method", "unsloth"),
                       "unsloth needs a CUDA GPU; none found")
    assert not out.exists() and not work_dir_for(out).exists()


def test_dpo_pair_with_identical_answers_names_the_line(tmp_path):
    records = preference_records()
    records[1]["rejected"] = [{"role": "assistant", "content": " " + QA[1][1]}]
    data = write_jsonl(tmp_path / "prefs.jsonl", records)
    out = tmp_path / "o"
    assert_clean_error(*cli("finetune", str(data), "--out", str(out), "--method", "dpo"),
                       "prefs.jsonl:2", "'chosen' and 'rejected' are the same answer")
    write_jsonl(data, [{"prompt": "q", "chosen": "a"}])
    assert_clean_error(*cli("finetune", str(data), "--out", str(out), "--method", "dpo"),
                       "prefs.jsonl:1", "missing rejected")
    assert not out.exists()


def test_full_finetuning_refuses_a_model_that_does_not_fit():
    from agentcycle.finetune.methods.full import check_memory

    with pytest.raises(ConfigError, match=r"135M-parameter model needs about 2\.0 GiB.*"
                                          r"use --method lora or qlora"):
        check_memory(135_000_000, 2**30)
    check_memory(135_000_000, 4 * 2**30)  # fits: no error


# --- the methods, trained for real ---------------------------------------------------


@pytest.mark.slow
def test_qlora_trains_4bit_and_merges_into_full_precision(tmp_path, base_model_dir, settings):
    out = tmp_path / "q"
    result = finetune(sft_examples(), out, base_model_dir, settings, tiny(), method="qlora")
    assert result.steps == 2 and result.final_loss and result.final_loss < 10
    config = json.loads((out / "config.json").read_text())
    # Served weights are the full-precision base plus the adapter, not 4-bit weights.
    assert "quantization_config" not in config
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not work_dir_for(out).exists()


@pytest.mark.slow
@pytest.mark.heavy  # make test-all
def test_full_finetuning_changes_every_layer_and_has_no_adapter(tmp_path, base_model_dir,
                                                                 settings):
    from safetensors import safe_open

    out = tmp_path / "full"
    result = finetune(sft_examples(), out, base_model_dir, settings,
                      tiny(learning_rate=1e-4), method="full")
    assert result.adapter_dir is None and not (out / "adapter").exists()
    name = "model.layers.0.mlp.down_proj.weight"  # the lowest layer: LoRA would not touch it
    with safe_open(out / "model.safetensors", "pt") as tuned, \
            safe_open(base_model_dir / "model.safetensors", "pt") as base:
        assert not tuned.get_tensor(name).float().equal(base.get_tensor(name).float())


@pytest.mark.slow
def test_dpo_trains_on_preference_pairs_and_logs_the_method(tmp_path, base_model_dir):
    import mlflow

    data = write_jsonl(tmp_path / "prefs.jsonl", preference_records())
    out = tmp_path / "dpo"
    code, output = cli("finetune", str(data), "--out", str(out), "--method", "dpo",
                       "--max-steps", "2", "--top-layers", "2", "--save-steps", "0")
    assert code == 0, output
    assert "merged model" in output and (out / "adapter" / "adapter_config.json").is_file()
    [run] = mlflow.search_runs(output_format="list")
    assert run.data.params["method"] == "dpo" and "final_train_loss" in run.data.metrics


# --- resume after SIGKILL ------------------------------------------------------------


def _start_training(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "agentcycle", "finetune", str(data), "--out", str(out),
               "--method", "lora-trl", "--max-steps", "3", "--top-layers", "2",
               "--save-steps", "1", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "AGENTCYCLE_DEBUG": "1"})


def _kill_after_first_checkpoint(process: subprocess.Popen, work: Path) -> None:
    state = work / "checkpoints" / "checkpoint-1" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.heavy  # make test-all
def test_resume_after_sigkill_ends_within_1_percent_of_an_uninterrupted_run(
        tmp_path, base_model_dir, settings):
    data = write_jsonl(tmp_path / "d.jsonl", sft_records())
    out = tmp_path / "tuned"
    work = work_dir_for(out)
    _kill_after_first_checkpoint(_start_training(data, out), work)
    assert not out.exists() and (work / "checkpoints").is_dir()

    # Neither a plain rerun nor a resume that changed the recipe may touch the checkpoints.
    args = ("finetune", str(data), "--out", str(out), "--max-steps", "3", "--top-layers", "2",
            "--save-steps", "1")
    assert_clean_error(*cli(*args, "--method", "lora-trl"), "pass --resume")
    assert_clean_error(*cli(*args, "--method", "full", "--resume"),
                       "cannot resume", "method was 'lora-trl', now 'full'")
    assert_clean_error(*cli(*args, "--method", "lora-trl", "--resume", "--base-model",
                            str(tmp_path)), "cannot resume", "base model was")

    code, output = cli(*args, "--method", "lora-trl", "--resume")
    assert code == 0, output
    assert "resumed at step" in output and (out / "model.safetensors").is_file()
    assert not work.exists()
    resumed = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert resumed["peft_type"] == "LORA"

    import mlflow

    [run] = mlflow.search_runs(output_format="list")  # the killed run, continued
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert sorted({m.step for m in history}) == [1, 2, 3]
    resumed_loss = [m.value for m in history if m.step == 3][0]

    straight = finetune(sft_examples_from(data), tmp_path / "straight", base_model_dir,
                        settings, tiny(max_steps=3, max_length=512, batch_size=4),
                        method="lora-trl")
    print(f"final loss: resumed {resumed_loss:.6f}, uninterrupted {straight.final_loss:.6f}")
    assert straight.final_loss == pytest.approx(resumed_loss, rel=0.01)


def sft_examples_from(data: Path):
    from agentcycle.finetune import read_jsonl, to_examples

    return to_examples(read_jsonl(data), data)


# --- a full disk while saving --------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 24 MiB tmpfs: the adapter fits, the ~540 MB merged model does not."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_error_and_no_half_written_model(
        tiny_disk, base_model_dir, settings):
    out = tiny_disk / "tuned"
    with pytest.raises(DiskFullError, match="no space left"):
        finetune(sft_examples(), out, base_model_dir, settings, tiny(max_steps=1),
                 method="lora-trl")
    assert not out.exists() and not work_dir_for(out).exists()
    assert list(tiny_disk.iterdir()) == []
