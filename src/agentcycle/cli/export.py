"""`agentcycle export`: a fine-tuned (or any llama) model as a file other engines run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from agentcycle.cli._common import console, friendly_errors, print_json

app = typer.Typer(help="Export a model for other engines (GGUF for llama.cpp, Ollama ...).",
                  no_args_is_help=True)


@app.command("gguf")
@friendly_errors
def gguf(
    model_dir: Path = typer.Argument(..., help="HF llama-architecture model dir (merged)."),
    out: Path = typer.Option(..., "--out", help="The GGUF file to write."),
    type: str = typer.Option("f16", "--type", help="f16 | q8_0"),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Load the file back and compare logits with the model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write MODEL_DIR as one GGUF file (f16 or q8_0), checked by a logit round trip."""
    from agentcycle.finetune.export import export_gguf

    status = contextlib.nullcontext() if as_json else console.status(
        f"exporting {model_dir} to {type} GGUF" + (" and checking it" if verify else ""))
    with status:
        result = export_gguf(model_dir, out, type, verify=verify, overwrite=overwrite)
    check = result.check
    if as_json:
        print_json({"path": str(result.path), "type": result.type, "bytes": result.bytes,
                    "seconds": round(result.seconds, 1), "tensors": result.tensors,
                    "tokenizer": result.tokenizer, "check": check.as_dict() if check else None})
        return
    console.print(f"wrote {result.path} ({result.bytes / 1e6:.1f} MB, {result.type}, "
                  f"{result.tensors} tensors, tokenizer {result.tokenizer}) "
                  f"in {result.seconds:.0f} s", highlight=False, soft_wrap=True)
    if check:
        console.print(f"round trip: max |logit diff| {check.max_abs_diff:.4f}, mean "
                      f"{check.mean_abs_diff:.4f}, top-1 agreement {check.top1_agreement:.1%} "
                      f"over {check.positions} positions (tolerance {check.tolerance[0]}, "
                      f"{check.tolerance[1]:.0%})", highlight=False, soft_wrap=True)
