"""thinkube.yaml: the platform's four published samples and an agent template's file
load; every invalid file is one line naming the file, the line and the field; our JSON
schema is the model's, shipped, and accepts what the stale published one rejects."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentcycle.deploy import DeployTarget, git_image_tag, load_thinkube, parse_thinkube
from agentcycle.deploy.thinkube import schema_path, schema_text, thinkube_json_schema
from agentcycle.errors import ConfigError

SAMPLES = Path(__file__).resolve().parents[2] / "shared/reference/thinkube-samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*.thinkube.yaml")) if SAMPLES.is_dir() else []
needs_samples = pytest.mark.skipif(not SAMPLE_FILES, reason=f"no platform samples in {SAMPLES}")

AGENT = """\
apiVersion: thinkube.io/v1
kind: ThinkubeDeployment
metadata:
  name: "{{ project_name }}"
spec:
  deployment:
    type: app
  containers:
    - name: agent
      build: .
      port: 8000
      size: medium
      health: /health
      test:
        enabled: true
        image: python:3.12-slim
        command: ./run_tests.sh
  routes:
    - path: /
      to: agent
  dependencies:
    - {name: litellm, type: llm-proxy, env: LITELLM_ENDPOINT}
    - {name: qdrant, type: vector-db, env: QDRANT_URL}
    - {name: nats, type: messaging, env: NATS_URL}
  env:
    - {name: AGENT_MODEL, description: the model the agent asks for, default: gpt-4o-mini}
"""


@needs_samples
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name.split(".")[0])
def test_platform_samples_load_and_meet_our_schema(path):
    spec = load_thinkube(path)
    assert spec.spec.containers and all(c.port for c in spec.spec.containers)
    jsonschema.validate(yaml.safe_load(path.read_text()), thinkube_json_schema())


@needs_samples
def test_the_published_schema_is_stale_and_ours_is_not():
    published = json.loads((SAMPLES / "published-thinkube-yaml-v1.0.schema.json").read_text())
    rejected = [p.name for p in SAMPLE_FILES
                if list(jsonschema.Draft7Validator(published).iter_errors(
                    yaml.safe_load(p.read_text())))]
    assert rejected  # health, test, gpu, deployment: unknown to the published schema
    agent = yaml.safe_load(AGENT)
    assert list(jsonschema.Draft7Validator(published).iter_errors(agent))
    jsonschema.validate(agent, thinkube_json_schema())


def test_agent_template_file_loads():
    spec = parse_thinkube(AGENT)
    assert [d.env for d in spec.spec.dependencies] == ["LITELLM_ENDPOINT", "QDRANT_URL",
                                                       "NATS_URL"]
    assert spec.container("agent").test.command == "./run_tests.sh"
    assert spec.spec.deployment.type == "app"


def test_shipped_schema_is_the_generated_one():
    assert schema_path().read_text() == schema_text(), (
        "regenerate: python -c 'from agentcycle.deploy.thinkube import schema_path, "
        "schema_text; schema_path().write_text(schema_text())'")
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"deployment", "containers", "dependencies", "env"} <= set(
        schema["$defs"]["DeploymentSpec"]["properties"])


def _knative(extra_deploy: str = "", container: str = "") -> str:
    return ("apiVersion: thinkube.io/v1\nkind: ThinkubeDeployment\nspec:\n"
            f"  deployment:\n    type: knative\n{extra_deploy}"
            "  containers:\n    - name: agent\n      build: .\n      port: 8000\n"
            f"{container}")


BAD = {
    "unknown size": (AGENT.replace("size: medium", "size: huge"), 12,
                     "spec.containers.0.size: unknown size 'huge'"),
    "knative with two containers": (
        _knative(container="    - name: other\n      build: ./other\n      port: 80\n"), 7,
        "a knative app has exactly one container (got 2)"),
    "gpu without memory": (AGENT.replace("size: medium", "gpu: {count: 1}"), 12,
                           "spec.containers.0.gpu.memory: a GPU needs its memory too"),
    "replicas on knative": (_knative("    replicas: 2\n"), 6,
                            "spec.deployment.replicas: knative scales itself"),
    "timeout over 900": (_knative("    timeoutSeconds: 901\n"), 6,
                         "spec.deployment.timeoutSeconds: Input should be less than or "
                         "equal to 900"),
    "route to an unknown container": (AGENT.replace("to: agent", "to: backend"), 20,
                                      "spec.routes.0.to: no container named 'backend'"),
    "bad container name": (AGENT.replace("name: agent", "name: My_Agent"), 9,
                           "spec.containers.0.name: String should match pattern"),
    "knative with a gpu": (_knative(container="      gpu: {count: 1, memory: 8Gi}\n"), 10,
                           "spec.containers.0.gpu: a knative app cannot have gpu"),
    "minScale on an app": (AGENT.replace("type: app", "type: app\n    minScale: 1"), 8,
                           "spec.deployment.minScale: only for type knative"),
    "unknown field": (AGENT.replace("port: 8000", "port: 8000\n      ports: [80]"), 12,
                      "spec.containers.0.ports: unknown field"),
    "tests without a command": (AGENT.replace("command: ./run_tests.sh", "one: x"), 14,
                                "spec.containers.0.test.command: tests are enabled"),
    "unknown service": (AGENT + "  services: [databse]\n", 27,
                        "spec.services.0: unknown service 'databse'"),
    "component without a name": (AGENT.replace("type: app", "type: component"), 7,
                                 "spec.deployment.type: a component needs deployment.name"),
    "duplicate key": (AGENT.replace("port: 8000", "port: 8000\n      port: 8001"), 12,
                      "key 'port' appears twice"),
    "bad yaml": (AGENT.replace("size: medium", "size: [medium"), 13, "invalid YAML"),
    "dependency env not a variable": (AGENT.replace("env: NATS_URL", "env: nats-url"), 24,
                                      "spec.dependencies.2.env: String should match"),
    "wrong kind": (AGENT.replace("kind: ThinkubeDeployment", "kind: Deployment"), 2,
                   "kind: Input should be 'ThinkubeDeployment'"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_files_are_one_line_naming_file_line_and_field(case, tmp_path):
    text, line, message = BAD[case]
    path = tmp_path / "thinkube.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_thinkube(path)
    error = str(info.value)
    assert error.startswith(f"{path}:{line}: "), error
    assert message in error
    assert "\n" not in error


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="thinkube.yaml: no such file"):
        load_thinkube(tmp_path / "thinkube.yaml")


def test_target_defaults_and_refusals():
    target = DeployTarget(app_name="legal-agent", domain="thinkube.example", image_tag="0.1.0")
    assert (target.namespace, target.registry, target.org) == (
        "legal-agent", "registry.thinkube.example", "thinkube-deployments")
    assert target.git_url == "https://git.thinkube.example/thinkube-deployments/legal-agent.git"
    assert target.ssh_url == ("ssh://git@git.thinkube.example:2222/thinkube-deployments/"
                              "legal-agent.git")
    assert target.image("agent") == "registry.thinkube.example/thinkube/legal-agent-agent"
    for fields, message in (
            ({"image_tag": "latest"}, "deploy target: image_tag 'latest' moves"),
            ({"app_name": "Legal"}, "app_name: String should match pattern"),
            ({"domain": "localhost"}, "domain: String should match pattern"),
            ({"parameters": {"Model-Id": "x"}}, "parameter 'Model-Id': snake_case")):
        base = {"app_name": "legal-agent", "domain": "thinkube.example", "image_tag": "abc"}
        with pytest.raises(ConfigError, match=message):
            DeployTarget.create(**{**base, **fields})


def test_git_image_tag_is_the_head_commit(tmp_path):
    assert git_image_tag(tmp_path) is None
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "thinkube.yaml").write_text(AGENT)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert git_image_tag(tmp_path) == head[:12]
