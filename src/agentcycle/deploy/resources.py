"""Our own models of the custom resources we write: the ArgoCD ``Application``, the
Gateway API ``HTTPRoute``, the Argo ``WorkflowTemplate`` and the Knative ``Service``.

They cover the fields we generate, strictly (an unknown field is an error, as it would
be for the cluster's structural schemas), plus the rules a schema cannot say: a DAG task
naming a template that does not exist, a route without a backend. The containers these
resources embed are core ``Container`` objects: ``embedded_containers`` hands them to
the core-kind validation. The tests check the same output against the upstream CRD
schemas.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CUSTOM_KINDS", "Application", "HTTPRoute", "KnativeService",
           "WorkflowTemplate", "embedded_containers", "parse_custom"]

_DNS = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ObjectMeta(_Strict):
    name: str = Field(pattern=_SUBDOMAIN, max_length=253)
    namespace: str | None = Field(None, pattern=_DNS, max_length=63)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    finalizers: list[str] = []


# ArgoCD Application ----------------------------------------------------------------

class AppSource(_Strict):
    repo_url: str = Field(alias="repoURL", min_length=1)
    target_revision: str = Field("HEAD", alias="targetRevision")
    path: str


class AppDestination(_Strict):
    server: str | None = None
    name: str | None = None
    namespace: str = Field(pattern=_DNS)

    @model_validator(mode="after")
    def _one_cluster(self) -> AppDestination:
        if (self.server is None) == (self.name is None):
            raise ValueError("give exactly one of destination.server or destination.name")
        return self


class Automated(_Strict):
    prune: bool = False
    self_heal: bool = Field(False, alias="selfHeal")


class SyncPolicy(_Strict):
    automated: Automated | None = None
    sync_options: list[str] = Field([], alias="syncOptions")


class ApplicationSpec(_Strict):
    project: str
    source: AppSource
    destination: AppDestination
    sync_policy: SyncPolicy | None = Field(None, alias="syncPolicy")
    revision_history_limit: int | None = Field(None, alias="revisionHistoryLimit", ge=0)


class Application(_Strict):
    api_version: Literal["argoproj.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Application"]
    metadata: ObjectMeta
    spec: ApplicationSpec


# Gateway API HTTPRoute -------------------------------------------------------------

class ParentRef(_Strict):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    section_name: str | None = Field(None, alias="sectionName")


class PathMatch(_Strict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = Field(pattern=r"^/", max_length=1024)


class RouteMatch(_Strict):
    path: PathMatch


class BackendRef(_Strict):
    name: str = Field(pattern=_DNS)
    port: int = Field(ge=1, le=65535)


class RouteRule(_Strict):
    matches: list[RouteMatch] = Field(min_length=1, max_length=64)
    backend_refs: list[BackendRef] = Field(alias="backendRefs", min_length=1)


class HTTPRouteSpec(_Strict):
    parent_refs: list[ParentRef] = Field(alias="parentRefs", min_length=1, max_length=32)
    hostnames: list[str] = Field(max_length=16)
    rules: list[RouteRule] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _hosts(self) -> HTTPRouteSpec:
        for host in self.hostnames:
            if not re.match(_SUBDOMAIN, host):
                raise ValueError(f"hostname '{host}' is not a DNS name")
        return self


class HTTPRoute(_Strict):
    api_version: Literal["gateway.networking.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["HTTPRoute"]
    metadata: ObjectMeta
    spec: HTTPRouteSpec


# Argo WorkflowTemplate -------------------------------------------------------------

class SecretKey(_Strict):
    name: str
    key: str


class GitArtifact(_Strict):
    repo: str
    revision: str | None = None
    depth: int | None = Field(None, ge=1)
    username_secret: SecretKey | None = Field(None, alias="usernameSecret")
    password_secret: SecretKey | None = Field(None, alias="passwordSecret")


class Artifact(_Strict):
    name: str
    path: str
    git: GitArtifact | None = None


class Inputs(_Strict):
    artifacts: list[Artifact] = []


class DagTask(_Strict):
    name: str
    template: str
    depends: str | None = None


class Dag(_Strict):
    tasks: list[DagTask] = Field(min_length=1)


class Template(_Strict):
    name: str
    inputs: Inputs | None = None
    dag: Dag | None = None
    container: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Template:
        if (self.dag is None) == (self.container is None):
            raise ValueError(f"template '{self.name}': exactly one of dag or container")
        return self


class Parameter(_Strict):
    name: str
    value: str


class Arguments(_Strict):
    parameters: list[Parameter] = []


class WorkflowTemplateSpec(_Strict):
    entrypoint: str
    service_account_name: str | None = Field(None, alias="serviceAccountName")
    arguments: Arguments = Arguments()
    ttl_strategy: dict[str, int] | None = Field(None, alias="ttlStrategy")
    pod_gc: dict[str, str] | None = Field(None, alias="podGC")
    volumes: list[dict[str, Any]] = []
    templates: list[Template] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> WorkflowTemplateSpec:
        names = {t.name for t in self.templates}
        if self.entrypoint not in names:
            raise ValueError(f"entrypoint '{self.entrypoint}' is not a template")
        for template in self.templates:
            tasks = {t.name for t in template.dag.tasks} if template.dag else set()
            for task in template.dag.tasks if template.dag else []:
                if task.template not in names:
                    raise ValueError(f"task '{task.name}' runs template '{task.template}', "
                                     "which does not exist")
                if task.depends and task.depends not in tasks:
                    raise ValueError(f"task '{task.name}' depends on '{task.depends}', "
                                     "which is not a task")
        return self


class WorkflowTemplate(_Strict):
    api_version: Literal["argoproj.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["WorkflowTemplate"]
    metadata: ObjectMeta
    spec: WorkflowTemplateSpec


# Knative Service -------------------------------------------------------------------

class RevisionMeta(_Strict):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class RevisionSpec(_Strict):
    containers: list[dict[str, Any]] = Field(min_length=1, max_length=1)
    container_concurrency: int | None = Field(None, alias="containerConcurrency", ge=0,
                                              le=1000)
    timeout_seconds: int | None = Field(None, alias="timeoutSeconds", ge=1, le=900)
    image_pull_secrets: list[dict[str, str]] = Field([], alias="imagePullSecrets")


class RevisionTemplate(_Strict):
    metadata: RevisionMeta = RevisionMeta()
    spec: RevisionSpec


class KnativeSpec(_Strict):
    template: RevisionTemplate


class KnativeService(_Strict):
    api_version: Literal["serving.knative.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: KnativeSpec


CUSTOM_KINDS: dict[tuple[str, str], type[_Strict]] = {
    ("argoproj.io/v1alpha1", "Application"): Application,
    ("argoproj.io/v1alpha1", "WorkflowTemplate"): WorkflowTemplate,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTPRoute,
    ("serving.knative.dev/v1", "Service"): KnativeService,
}


def parse_custom(obj: dict[str, Any]) -> BaseModel | None:
    """The object as our model, or None when it is not one of our custom kinds (raises
    pydantic's ValidationError when it is one and does not fit)."""
    model = CUSTOM_KINDS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    return model.model_validate(obj) if model else None


def embedded_containers(resource: BaseModel) -> list[tuple[str, dict[str, Any]]]:
    """(field path, core Container) pairs inside a custom resource."""
    if isinstance(resource, WorkflowTemplate):
        return [(f"spec.templates[{i}].container", t.container)
                for i, t in enumerate(resource.spec.templates) if t.container is not None]
    if isinstance(resource, KnativeService):
        return [(f"spec.template.spec.containers[{i}]", c)
                for i, c in enumerate(resource.spec.template.spec.containers)]
    return []
