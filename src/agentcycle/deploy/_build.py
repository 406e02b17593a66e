"""The Argo ``WorkflowTemplate`` that tests and builds the app's images on a push.

A DAG per container: ``test-<c>`` runs ``test.command`` in ``test.image`` on a clone of
the pushed commit, then ``build-<c>`` builds the container's context with Kaniko and
pushes it to Harbor tagged with the commit (``commit`` parameter: the Sensor passes the
push's SHA; its default is the deployed tag, so a manual submit rebuilds what runs) and
with the workflow's uid. The clone uses a Gitea token by reference (Secret
``gitea-credentials``), Kaniko Harbor's by reference (``harbor-docker-config``): the
platform's generator wrote an admin password into this file.
"""

from __future__ import annotations

from typing import Any

from agentcycle.deploy.target import DeployTarget
from agentcycle.deploy.thinkube import Container, ThinkubeDeployment

Obj = dict[str, Any]
KANIKO = "gcr.io/kaniko-project/executor:v1.23.2"
_WORKSPACE = "/workspace"


def build_workflow(spec: ThinkubeDeployment, target: DeployTarget) -> Obj:
    tasks: list[Obj] = []
    templates: list[Obj] = [{"name": "main", "dag": {"tasks": tasks}}]
    for container in spec.spec.containers:
        test = container.test
        if test and test.enabled and test.command:
            templates.append(_test(container, target))
            tasks.append({"name": f"test-{container.name}",
                          "template": f"test-{container.name}"})
        templates.append(_build(container, target))
        build: Obj = {"name": f"build-{container.name}",
                      "template": f"build-{container.name}"}
        if tasks and tasks[-1]["name"] == f"test-{container.name}":
            build["depends"] = f"test-{container.name}"
        tasks.append(build)
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
        "metadata": {"name": f"{target.app_name}-build", "namespace": "argo",
                     "labels": {"app.kubernetes.io/name": target.app_name,
                                "app.kubernetes.io/managed-by": "argocd",
                                "app.kubernetes.io/part-of": "thinkube",
                                "thinkube.io/trigger": "webhook"}},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "kaniko-builder",
            "arguments": {"parameters": [
                {"name": "revision", "value": "main"},
                {"name": "commit", "value": target.image_tag}]},
            "ttlStrategy": {"secondsAfterCompletion": 86400},
            "podGC": {"strategy": "OnPodSuccess"},
            "volumes": [{"name": "docker-config",
                         "secret": {"secretName": "harbor-docker-config",
                                    "items": [{"key": ".dockerconfigjson",
                                               "path": "config.json"}]}}],
            "templates": templates,
        },
    }


def _source(target: DeployTarget) -> Obj:
    """The pushed revision, cloned by Argo as an input artifact."""
    return {"name": "source", "path": _WORKSPACE,
            "git": {"repo": target.git_url, "revision": "{{workflow.parameters.revision}}",
                    "depth": 1,
                    "usernameSecret": {"name": "gitea-credentials", "key": "username"},
                    "passwordSecret": {"name": "gitea-credentials", "key": "token"}}}


def _context(container: Container) -> str:
    build = container.build.strip("/").removeprefix("./").removeprefix(".")
    return f"{_WORKSPACE}/{build}".rstrip("/")


def _test(container: Container, target: DeployTarget) -> Obj:
    assert container.test is not None and container.test.command
    return {"name": f"test-{container.name}",
            "inputs": {"artifacts": [_source(target)]},
            "container": {"image": container.test.image or "python:3.12-slim",
                          "command": ["sh", "-c"], "args": [container.test.command],
                          "workingDir": _context(container),
                          "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                        "limits": {"memory": "4Gi"}}}}


def _build(container: Container, target: DeployTarget) -> Obj:
    image = target.image(container.name)
    return {"name": f"build-{container.name}",
            "inputs": {"artifacts": [_source(target)]},
            "container": {
                "image": KANIKO,
                "args": [f"--context=dir://{_context(container)}",
                         f"--dockerfile={_context(container)}/Dockerfile",
                         f"--destination={image}:{{{{workflow.parameters.commit}}}}",
                         f"--destination={image}:{{{{workflow.uid}}}}",
                         f"--build-arg=CONTAINER_REGISTRY={target.registry}",
                         "--cache=true", f"--cache-repo={image}-cache",
                         "--snapshot-mode=redo"],
                "volumeMounts": [{"name": "docker-config", "mountPath": "/kaniko/.docker"}],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                              "limits": {"memory": "8Gi"}}}}
