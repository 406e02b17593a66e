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


def run_group(args: list[str], cwd: Path, env: dict[str, str],
              timeout: float) -> subprocess.CompletedProcess:
    """Run a command in its own process group; past ``timeout`` the whole group (the
    servers it started included) is stopped, so nothing outlives the test."""
    import signal

    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        raise AssertionError(f"{' '.join(args)} ran past {timeout} s:\n{out[-2000:]}") from None
    return subprocess.CompletedProcess(args, process.returncode, out, err)


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


def ci_command(project: Path) -> list[str]:
    """What the platform's CI runs before building (thinkube.yaml's test.command)."""
    deployment = yaml.safe_load((project / "thinkube.yaml").read_text())
    commands = [c["test"]["command"] for c in deployment["spec"]["containers"]
                if (c.get("test") or {}).get("enabled", True) and c.get("test")]
    assert commands, "thinkube.yaml names no test command"
    return commands[0].split()


@pytest.mark.slow  # each project's suite: 30 s and more on 2 cores
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_project_tests_pass(name, tmp_path, home_settings):
    """The project's own test command, as the platform's CI runs it, in this
    environment (SKIP_INSTALL=1: agentcycle is already installed here)."""
    project = render(name, tmp_path, home_settings)
    result = run_group([*ci_command(project), "-x", "-p", "no:cacheprovider"], project,
                       project_env(project) | {"SKIP_INSTALL": "1"}, timeout=900)
    assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow if n == "tkt-rag-agent" else pytest.mark.heavy)
    for n in TEMPLATES])
def test_template_eval_gate_passes_on_the_bundled_model(name, tmp_path, home_settings):
    """`make eval` (agentcycle eval run evals/suite.yaml) with no model configured: the
    agent serves the bundled model; every gate of the suite must pass."""
    import json

    project = render(name, tmp_path, home_settings)
    result = run_group(["make", "eval", f"PYTHON={sys.executable}"], project,
                       project_env(project), timeout=1200)
    assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    # `eval run` exits 1 when a gate fails: exit 0 is every gate passed
    assert "gate failed" not in result.stdout + result.stderr
    run = json.loads((project / "eval-runs" / "latest" / "run.json").read_text())
    assert run["finished"] and run["metrics"]["cases"] > 0


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
    result = update_project(project)
    assert (result.old_version, result.new_version) == (old, new)
    assert result.conflicts == []
    assert pyproject.read_text().endswith('[tool.our-team]\non-call = "Ada"\n')
    assert (project / "CHANGELOG.md").read_text().startswith(f"# {new}")
    assert read_answers(project)["_commit"] == f"v{new}"


def _chromium():
    """Debian's headless Chromium through its chromedriver: selenium-manager never runs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {process.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the app did not answer /health in time")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/chromedriver").exists(), reason="needs Debian's "
                    "chromium and chromedriver (CI installs them)")
def test_template_ui_answers_one_question_in_headless_chromium(tmp_path, home_settings,
                                                               monkeypatch):
    """The tool agent's project served as the platform runs it (`agentcycle app --agent
    <package>.agent:build_agent`) on the scripted model; a browser logs in with an API
    key, asks one question and reads the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from agentcycle.serving.server import free_port
    from agentcycle.testing import ScriptedModel

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium: no download, ever
    project = render("tkt-tool-agent", tmp_path, home_settings)
    package = read_answers(project)["project_name"].replace("-", "_")
    answer = "Returns are accepted within 30 days of delivery."
    key = "ui-test-key-0123456789"
    port = free_port()
    with ScriptedModel(default=answer) as model:
        env = project_env(project) | {
            "PYTHONPATH": str(project / "src"), "AGENTCYCLE_SERVER_URL": model.base_url,
            "AGENTCYCLE_API_KEYS": f"tester={key}"}
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "agentcycle"), "app", "--agent",
             f"{package}.agent:build_agent", "--port", str(port)],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        driver = None
        try:
            _wait_healthy(url, process)
            driver = _chromium()
            wait = WebDriverWait(driver, 60)
            driver.get(f"{url}/ui/")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
            driver.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("tester")
            password = driver.find_element(By.CSS_SELECTOR, "input[type=password]")
            password.send_keys(key, Keys.ENTER)
            box = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "textarea"))[0]
            box.send_keys("How long do I have to return a jacket?", Keys.ENTER)
            wait.until(lambda d: answer in d.find_element(By.TAG_NAME, "body").text)
            assert "How long do I have to return a jacket?" in str(model.requests[-1])
        finally:
            if driver is not None:
                driver.quit()
            import signal

            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
