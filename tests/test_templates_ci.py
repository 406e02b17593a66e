"""Template CI: every shipped template rendered with `agentcycle new`, its own tests run,
its eval gate run (on the bundled model), its manifests generated and validated with
`agentcycle deploy --dry-run`, an update from an older version applied, and the agent's
UI driven in headless Chromium through one question."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agentcycle.cli.main import app
from agentcycle.settings import Settings
from agentcycle.templates import (
    assemble,
    materialize,
    new_project,
    publish,
    read_answers,
    template_names,
    update_project,
)

TEMPLATES = template_names()
REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("AGENTCYCLE_TEST_CACHE", REPO / ".agentcycle" / "models"))
runner = CliRunner()


def project_env(project: Path) -> dict[str, str]:
    """The environment a developer's shell would give the project: no platform service."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENTCYCLE_", "PYTEST_", "LITELLM_", "QDRANT_", "NATS_",
                                "MLFLOW_", "LANGFUSE_"))}
    return env | {"AGENTCYCLE_HOME": str(project / ".agentcycle"),
                  "AGENTCYCLE_CACHE": str(MODEL_CACHE), "HF_HUB_OFFLINE": "1",
                  "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                  "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}


def render(name: str, where: Path, settings: Settings) -> Path:
    dest = where / ("ci-" + name.removeprefix("tkt-"))
    new_project(name, dest, settings=settings)
    return dest


@pytest.fixture
def home_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_renders_a_complete_project(name, tmp_path, home_settings):
    release = materialize(name, home_settings)
    manifest = release.manifest
    assert manifest.metadata.name == name
    assert len(manifest.parameters) <= 2
    project = render(name, tmp_path, home_settings)
    files = {p.relative_to(project).as_posix() for p in project.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(project).parts}
    for required in ("thinkube.yaml", "Dockerfile", "README.md", "AGENTS.md", ".env.example",
                     "pyproject.toml", ".copier-answers.yml"):
        assert required in files, f"{name}: {required} missing"
    assert not [f for f in files if f.endswith(".jinja") or "{{" in f or "{%" in f]
    assert "manifest.yaml" not in files and "copier.yml" not in files
    assert any(f.startswith("tests/") for f in files)
    deployment = yaml.safe_load((project / "thinkube.yaml").read_text())
    assert deployment["kind"] == "ThinkubeDeployment"
    for container in deployment["spec"]["containers"]:
        assert container.get("health") == "/health"
        command = (container.get("test") or {}).get("command", "")
        script = command.split()[0] if command else ""
        if script.startswith("./"):
            assert os.access(project / script, os.X_OK), f"{name}: {script} not executable"
    dockerfile = (project / "Dockerfile").read_text()
    assert "ARG CONTAINER_REGISTRY" in dockerfile
    assert any(line.strip().startswith("USER ") and "root" not in line
               for line in dockerfile.splitlines())
    assert ":latest" not in dockerfile
    assert git(project, "status", "--porcelain") == ""
    assert read_answers(project)["_commit"] == release.tag


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_project_tests_pass(name, tmp_path, home_settings):
    project = render(name, tmp_path, home_settings)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                             "no:cacheprovider"], cwd=project, env=project_env(project),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_manifests_generate_and_validate(name, tmp_path, home_settings,
                                                  monkeypatch):
    project = render(name, tmp_path, home_settings)
    monkeypatch.setenv("DOMAIN_NAME", "example.com")
    result = runner.invoke(app, ["deploy", str(project), "--dry-run"])
    assert result.exit_code == 0, f"{name}: {result.output}"
    k8s = project / "k8s"
    for required in ("kustomization.yaml", "deployments.yaml", "build-workflow.yaml"):
        assert (k8s / required).is_file(), f"{name}: k8s/{required} missing"


def _older_and_newer(name: str, repo_settings: Settings) -> tuple[str, str]:
    """Publish a newer version of ``name`` over the shipped one: a new file, a changed
    README section and the version bumped."""
    old = materialize(name, repo_settings)
    major, *rest = old.manifest.metadata.version.split(".")
    newer = ".".join([str(int(major) + 1), *["0" for _ in rest]])

    def build(dest: Path) -> None:
        assemble(name, dest)
        manifest = yaml.safe_load((dest / "manifest.yaml").read_text())
        manifest["metadata"]["version"] = newer
        (dest / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (dest / "CHANGELOG.md").write_text(f"# {newer}\n\nA newer template.\n")

    publish(name, build, repo_settings.home.resolve() / "templates" / name)
    return old.tag.removeprefix("v"), newer


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_update_from_an_older_version_keeps_the_users_edit(name, tmp_path,
                                                                   home_settings):
    project = render(name, tmp_path, home_settings)
    pyproject = project / "pyproject.toml"  # the user's own setting, appended
    pyproject.write_text(pyproject.read_text() + '\n[tool.our-team]\non-call = "Ada"\n')
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "ours")
    old, new = _older_and_newer(name, home_settings)
    result = update_project(project, settings=home_settings)
    assert (result.old_version, result.new_version) == (old, new)
    assert result.conflicts == []
    assert pyproject.read_text().endswith('[tool.our-team]\non-call = "Ada"\n')
    assert (project / "CHANGELOG.md").read_text().startswith(f"# {new}")
    assert read_answers(project)["_commit"] == f"v{new}"
