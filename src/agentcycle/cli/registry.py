"""`agentcycle registry ...` (MLflow's model registry) and `agentcycle finetune-job`."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.table import Table

from agentcycle.cli._common import console, friendly_errors, settings

app = typer.Typer(help="Register tuned models in MLflow's registry; promote them on gates.",
                  no_args_is_help=True)


@app.command()
@friendly_errors
def register(
    model_dir: Path = typer.Argument(..., help="The tuned model's HF directory."),
    name: str = typer.Option(..., "--name", "-n", help="The registered model's name."),
    eval_run: str | None = typer.Option(None, "--eval-run", help="An eval run id (from "
                                        "`agentcycle eval list`) whose metrics go with it."),
    run_id: str | None = typer.Option(None, "--run-id", help="The fine-tune MLflow run "
                                      "(default: the run that wrote MODEL_DIR)."),
    data: Path | None = typer.Option(None, "--data", help="The training file, hashed into "
                                     "the lineage."),
) -> None:
    """Register MODEL_DIR as the next version of NAME, with lineage and eval metrics."""
    from agentcycle.evals.evidence import eval_evidence
    from agentcycle.finetune import registry
    from agentcycle.models.bundled import check_model_dir

    config = settings()
    check_model_dir(model_dir)
    lineage: dict = {}
    metrics: dict = {}
    if data is not None:
        lineage |= registry.data_lineage(data)
    if eval_run:  # read before anything is written: a bad id is one error, nothing half-done
        metrics, evidence, _ = eval_evidence(eval_run, settings=config)
        lineage |= evidence
    run_id = run_id or registry.finetune_run_for(model_dir, config)
    if run_id:
        lineage = registry.finetune_lineage(run_id, config) | lineage
    version = registry.register_model(model_dir, name, run_id=run_id, metrics=metrics,
                                      lineage=lineage, settings=config)
    console.print(f"registered {version.uri}" + (f" (run {run_id})" if run_id else ""),
                  highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def promote(
    name: str = typer.Argument(...),
    version: str = typer.Argument(..., help="The version number to promote."),
    eval_run: str = typer.Option(..., "--eval-run", help="The eval run whose gates decide."),
    gate: list[str] = typer.Option([], "--gate", "-g", help="A gate besides the suite's, "
                                   "e.g. 'accuracy>=0.7' (repeat)."),
    alias: str = typer.Option("champion", help="The alias to move."),
) -> None:
    """Point NAME@ALIAS at VERSION when every gate of the eval run passes (else exit 1)."""
    from agentcycle.evals.evidence import eval_evidence
    from agentcycle.finetune import registry

    config = settings()
    _, _, results = eval_evidence(eval_run, gate, config)
    promoted = registry.promote(name, version, results, alias, eval_run=eval_run,
                                settings=config)
    passed = ", ".join(str(r.gate) for r in results)
    console.print(f"{registry.PREFIX}{name}@{alias} -> version {promoted.version} "
                  f"(passed: {passed})", highlight=False, soft_wrap=True)


@app.command(name="list")
@friendly_errors
def list_(name: str | None = typer.Argument(None, help="One registered model.")) -> None:
    """Registered versions, newest first, with aliases, accuracy and training data."""
    from agentcycle.finetune import registry

    versions = registry.list_versions(name, settings())
    if not versions:
        console.print("no registered models")
        return
    table = Table(title="registered models", width=80)
    for column, width in (("model", None), ("ver", 3), ("aliases", None), ("acc", 5),
                          ("base model", None), ("data", 8), ("created", 14)):
        table.add_column(column, min_width=width, overflow="fold", no_wrap=bool(width))
    for v in versions:
        table.add_row(v.name, v.version, ",".join(v.aliases) or "-",
                      v.tags.get("metric.accuracy", "-"),
                      Path(v.tags.get("agentcycle.base_model", "-")).name,
                      v.tags.get("agentcycle.data.sha256", "-")[:8],
                      v.created)
    console.print(table)


@friendly_errors
def finetune_job(
    data: str = typer.Argument(..., help="Training JSONL, relative to the PVC."),
    model_out: str = typer.Option(..., "--model-out", help="Where the Job writes the merged "
                                  "model, relative to the PVC."),
    image: str = typer.Option(..., "--image", help="An image with agentcycle and CUDA torch."),
    name: str = typer.Option("agentcycle-finetune", "--name", help="The Job's name."),
    out: Path | None = typer.Option(None, "--out", help="Write the manifest here (default: "
                                    "print it)."),
    namespace: str | None = typer.Option(None, "--namespace"),
    gpus: int = typer.Option(1, "--gpus", min=0),
    gpu_memory: str = typer.Option("20Gi", "--gpu-memory", help="GPU memory the node must "
                                   "have."),
    pvc: str = typer.Option("agentcycle-data", "--pvc", help="The claim holding data and "
                            "output."),
    mlflow_secret: str = typer.Option("agentcycle-mlflow", "--mlflow-secret", help="Secret "
                                      "with MLFLOW_TRACKING_URI and MLFLOW_AUTH_*."),
    register_as: str | None = typer.Option(None, "--register", help="Register the model "
                                           "under this name when training ends."),
    finetune_args: str = typer.Option("", "--finetune-args", help="More `agentcycle "
                                      "finetune` options, e.g. '--max-steps 200'."),
) -> None:
    """Write a Kubernetes Job that runs `agentcycle finetune` on a GPU node."""
    from agentcycle._files import atomic_write
    from agentcycle.errors import ConfigError
    from agentcycle.finetune.k8s import FinetuneJob, finetune_job_manifest, manifest_yaml

    try:
        extra = shlex.split(finetune_args)
    except ValueError as exc:
        raise ConfigError(f"--finetune-args: {exc}") from None
    job = FinetuneJob(name=name, data=data, out=model_out, image=image, finetune_args=extra,
                      register_as=register_as, namespace=namespace, gpus=gpus,
                      gpu_memory=gpu_memory or None, pvc=pvc, mlflow_secret=mlflow_secret)
    text = manifest_yaml(finetune_job_manifest(job))
    if out is None:
        print(text, end="")
        return
    if out.is_dir():
        raise ConfigError(f"--out {out}: that is a folder, not a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, text)
    console.print(f"wrote {out} (kubectl apply -f {out})", highlight=False, soft_wrap=True)
