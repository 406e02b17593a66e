"""The four agent templates' sources: assembled (base + overlay), rendered with Copier,
each generated project is plain files that pass ruff and their own unit tests (on the
scripted model), and its manifest.yaml / thinkube.yaml hold what the platform needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentcycle.errors import ConfigError
from agentcycle.templates._sources import assemble, template_names

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = ["tkt-agentic-workflow", "tkt-multi-agent", "tkt-rag-agent", "tkt-tool-agent"]
# The services each kind uses, by the variable the platform fills for it.
SERVICES = {"tkt-rag-agent": {"LITELLM_ENDPOINT", "QDRANT_URL"},
            "tkt-tool-agent": {"LITELLM_ENDPOINT"},
            "tkt-multi-agent": {"LITELLM_ENDPOINT", "QDRANT_URL", "NATS_URL"},
            "tkt-agentic-workflow": {"LITELLM_ENDPOINT"}}
TRACING = {"LANGFUSE_HOST", "MLFLOW_TRACKING_URI"}
SIZES = {"small", "medium", "large", "xlarge"}
PARAM_TYPES = {"str", "bool", "int", "choice"}


def render(name: str, root: Path, **data: object) -> Path:
    import copier

    assemble(name, root / "template")
    project = root / "my-agent"
    copier.run_copy(str(root / "template"), str(project), defaults=True, quiet=True,
                    data={"project_name": "my-agent", **data})
    return project


@pytest.fixture(scope="module", params=TEMPLATES)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[str, Path]:
    return request.param, render(request.param, tmp_path_factory.mktemp(request.param))


def project_env() -> dict[str, str]:
    """Our venv first on PATH (run_tests.sh calls `python`), the converted model cached
    where the rest of the suite caches it, no install (SKIP_INSTALL)."""
    from conftest import MODEL_CACHE

    return {**os.environ, "SKIP_INSTALL": "1", "AGENTCYCLE_CACHE": str(MODEL_CACHE),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run_project_tests(project: Path, *args: str, timeout: int) -> None:
    done = subprocess.run(["./run_tests.sh", "-q", "-p", "no:cacheprovider", *args],
                          cwd=project, env=project_env(), capture_output=True, text=True,
                          timeout=timeout)
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, output
    assert " passed" in output and "failed" not in output


def test_the_four_platform_templates_are_shipped() -> None:
    assert template_names() == TEMPLATES


def test_an_unknown_template_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown template 'tkt-chat'.*tkt-rag-agent"):
        assemble("tkt-chat", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_assemble_lays_the_overlay_over_the_base_and_refreshes_a_folder(tmp_path: Path
                                                                        ) -> None:
    assemble("tkt-tool-agent", tmp_path)
    assert (tmp_path / "copier-base.yml").is_file()  # from _base
    assert (tmp_path / "src/{{package_name}}/tools.py").is_file()  # from the overlay
    assert not (tmp_path / "src/{{package_name}}/__pycache__").exists()
    (tmp_path / "manifest.yaml").write_text("stale")
    assemble("tkt-tool-agent", tmp_path)
    assert "TemplateManifest" in (tmp_path / "manifest.yaml").read_text()


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_manifest_declares_metadata_parameters_and_secrets(name: str, tmp_path: Path
                                                               ) -> None:
    assemble(name, tmp_path)
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("thinkube.io/v1", "TemplateManifest")
    meta = manifest["metadata"]
    assert meta["name"] == name and meta["title"] and meta["description"] and meta["tags"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    parameters = manifest["parameters"]
    assert 0 <= len(parameters) <= 2
    copier_questions = yaml.safe_load_all((tmp_path / "copier.yml").read_text().replace(
        "!include copier-base.yml", ""))
    asked = {k for doc in copier_questions if doc for k in doc if not k.startswith("_")}
    for parameter in parameters:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", parameter["name"])
        assert parameter["type"] in PARAM_TYPES
        assert parameter["name"] in asked  # Copier asks what the platform passes
    secrets = {s["name"]: s for s in manifest["secrets"]}
    assert secrets["AGENTCYCLE_API_KEYS"]["required"] is True
    assert {"LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LITELLM_MASTER_KEY"} <= set(secrets)


def test_thinkube_yaml_declares_the_agent_container_and_its_services(project) -> None:
    from agentcycle.deploy import load_thinkube

    name, path = project
    spec = load_thinkube(path / "thinkube.yaml").spec  # our model of the platform's format
    (container,) = spec.containers
    assert (container.name, container.port, container.health) == ("agent", 8000, "/health")
    assert container.size in SIZES and container.build == "."
    assert container.test.enabled and container.test.command == "./run_tests.sh"
    assert os.access(path / "run_tests.sh", os.X_OK)
    assert [(r.path, r.to) for r in spec.routes] == [("/", "agent")]
    declared = {d.env for d in spec.dependencies}
    assert declared == SERVICES[name] | TRACING  # nothing is injected unless declared
    # The workflow's waiting threads outlive a pod in the platform's PostgreSQL.
    assert spec.services == (["database"] if name == "tkt-agentic-workflow" else [])


def test_the_rendered_project_is_plain_python_with_its_answers(project) -> None:
    name, path = project
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith(".jinja") or f.endswith(".kind.md")]
    assert not {"copier.yml", "copier-base.yml", "manifest.yaml"} & files
    assert {"src/my_agent/agent.py", "src/my_agent/config.py", "tests/conftest.py",
            "evals/suite.yaml", "scripts/loadtest.py", "Dockerfile", "Makefile",
            "README.md", "AGENTS.md", ".env.example", "app.env", "docs/returns.md"} <= files
    answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    assert answers["project_name"] == "my-agent" and answers["_src_path"]
    assert "package_name" not in answers  # computed, never stored
    pyproject = (path / "pyproject.toml").read_text()
    assert 'name = "my-agent"' in pyproject and '"my_agent.agent:build_agent"' in pyproject
    suite = yaml.safe_load((path / "evals/suite.yaml").read_text())
    assert suite["target"].startswith("agent:my_agent.agent:build_agent") and suite["gates"]
    readme = (path / "README.md").read_text()
    assert readme.startswith("# my-agent") and "{{" not in readme


def test_the_dockerfile_is_pinned_parameterised_and_non_root(project) -> None:
    _, path = project
    dockerfile = (path / "Dockerfile").read_text()
    assert "ARG CONTAINER_REGISTRY" in dockerfile
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert base.startswith("${CONTAINER_REGISTRY}/") and re.search(r":\d+\.\d+\.\d+-", base)
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert '"my_agent.agent:build_agent", "--host", "0.0.0.0", "--port", "8000"' in dockerfile


def test_no_secret_is_committed_with_the_project(project) -> None:
    _, path = project
    assert ".env" in (path / ".gitignore").read_text().split()
    example = dict(line.split("=", 1) for line in (path / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    assert example["AGENTCYCLE_API_KEYS"] == "dev=change-me"  # a placeholder
    assert set(example) <= {"AGENTCYCLE_API_KEYS", "LITELLM_LOCAL_MODEL_COST_MAP"}


def test_the_rendered_project_passes_ruff(project) -> None:
    _, path = project
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run([str(ruff), "check", "--no-cache", "src", "tests", "scripts"],
                          cwd=path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# Each project's own suite is 30-90 s (a pytest process importing agentcycle, MLflow
# and LiteLLM, agents built on the scripted model); tests/test_templates_ci.py runs all
# four, the same ./run_tests.sh, through `agentcycle new` in the default run, so these
# run in `make test-all` only.
@pytest.mark.heavy
@pytest.mark.parametrize("name", TEMPLATES)
def test_the_generated_project_passes_its_own_unit_tests(name: str, tmp_path: Path) -> None:
    run_project_tests(render(name, tmp_path), timeout=600)


def test_a_bad_project_name_is_refused_by_the_template(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("^[a-z][a-z0-9-]*$")):
        render("tkt-tool-agent", tmp_path, project_name="My Agent")


# The projects' integration tests: their eval suite and gates on the bundled model
# (minutes each on 2 cores). The RAG project's gate also runs in the default suite,
# through `make eval`, in tests/test_templates_ci.py.
@pytest.mark.heavy
@pytest.mark.parametrize("name", TEMPLATES)
def test_the_project_passes_its_eval_gate_on_the_bundled_model(name: str, tmp_path: Path
                                                              ) -> None:
    run_project_tests(render(name, tmp_path), "-m", "integration", timeout=1200)
