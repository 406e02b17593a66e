"""``thinkube.yaml``: the platform's deployment descriptor, as a pydantic model.

The model accepts what the control plane accepts today (``thinkube-deploy.md`` section
2: ``deployment``, ``health``, ``test``, ``gpu``, ``env``, ``dependencies`` ... which the
published v1.0 schema lacks) and rejects, with ``file:line: field: message``, what a
cluster would refuse later: an unknown size, a knative app with two containers or a GPU,
a GPU without memory, replicas on knative, ``timeoutSeconds`` over 900, a route to an
unknown container, names Kubernetes cannot take. ``thinkube_json_schema()`` is the same
model as JSON Schema; ``thinkube.schema.json`` beside this module is that schema shipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from agentcycle._yaml import load_yaml, relevant_errors
from agentcycle.deploy._secrets import credential_problem
from agentcycle.errors import ConfigError

__all__ = ["SIZES", "Container", "Dependency", "DeploymentSpec", "SpecIssue",
           "ThinkubeDeployment", "load_thinkube", "parse_thinkube", "schema_path",
           "thinkube_json_schema"]

NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # a DNS label that also starts with a letter
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Mi|Gi|Ti)$"
# requests (memory, cpu) and limits (memory, cpu) per size; the platform's small is
# 128Mi/100m requested, its sizes' memory limits 256Mi, 512Mi, 1Gi and 16Gi.
SIZES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "small": (("128Mi", "100m"), ("256Mi", "500m")),
    "medium": (("256Mi", "250m"), ("512Mi", "1")),
    "large": (("512Mi", "500m"), ("1Gi", "2")),
    "xlarge": (("8Gi", "2"), ("16Gi", "8")),
}
_SERVICES = r"^(database|cache|storage|queue|workflows)(:[a-z0-9-]+)?$"


class SpecIssue(ValueError):
    """A rule across fields, raised inside a validator with the field it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel,
                              populate_by_name=True)


class Gpu(_Model):
    count: int = Field(ge=1, description="GPUs per pod.")
    memory: str = Field(pattern=QUANTITY, description="Memory per GPU the node must have, "
                                                      "e.g. 20Gi.")


class ContainerTest(_Model):
    enabled: bool = True
    command: str | None = Field(None, description="Run by CI in `image` before the build.")
    image: str | None = None
    one: str | None = Field(None, description="Runs one test file; `<file>` is replaced.")

    @model_validator(mode="after")
    def _enabled_needs_a_command(self) -> ContainerTest:
        if self.enabled and not self.command:
            raise SpecIssue(("command",), "tests are enabled: give the command CI runs")
        return self


class Migrations(_Model):
    tool: str
    auto: bool = False


def _no_credential(name: str, value: object, field: str) -> None:
    problem = credential_problem(name, str(value)) if value is not None else None
    if problem:
        raise SpecIssue((field,), f"{name}: {problem} would be committed to git: put it "
                                  "in the app's Secret <app>-env in the cluster")


class EnvValue(_Model):
    name: str = Field(pattern=ENV_NAME)
    value: str

    @model_validator(mode="after")
    def _no_secret(self) -> EnvValue:
        _no_credential(self.name, self.value, "value")
        return self


class Container(_Model):
    name: str = Field(pattern=NAME, max_length=40)
    build: str = Field(min_length=1, description="Build context, e.g. `.` or `./backend`.")
    port: int | None = Field(None, ge=1, le=65535)
    health: str | None = Field(None, pattern=r"^/", description="Probe path, e.g. /health.")
    size: Literal["small", "medium", "large", "xlarge"] = "small"
    gpu: Gpu | None = None
    mounts: list[str] = Field([], description='Volumes as "name:/path".')
    schedule: str | None = Field(None, description="Cron: the container runs as a CronJob.")
    test: ContainerTest | None = None
    migrations: Migrations | None = None
    environment: list[EnvValue] = []
    capabilities: list[Literal["large-uploads"]] = []
    public_env: list[str] = []
    volume: dict[str, Any] | str | None = None

    @model_validator(mode="after")
    def _mounts(self) -> Container:
        for i, mount in enumerate(self.mounts):
            if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?:/[A-Za-z0-9/_.-]*$", mount):
                raise SpecIssue(("mounts", i), f"'{mount}': write a mount as 'name:/path'")
        if self.health and self.port is None:
            raise SpecIssue(("health",), "a health path needs the container's port")
        return self


class Route(_Model):
    path: str = Field(pattern=r"^/")
    to: str


class Dependency(_Model):
    name: str = Field(pattern=NAME)
    type: str = Field(min_length=1, description="e.g. llm-proxy, vector-db, messaging.")
    env: str = Field(pattern=ENV_NAME, description="The variable that gets its URL.")


class EnvDefault(_Model):
    name: str = Field(pattern=ENV_NAME)
    description: str | None = None
    default: str | int | float | bool | None = None

    @model_validator(mode="after")
    def _no_secret(self) -> EnvDefault:
        _no_credential(self.name, self.default, "default")
        return self


class Deployment(_Model):
    type: Literal["app", "knative", "component", "none"] = "app"
    name: str | None = Field(None, pattern=NAME, description="A component's fixed name.")
    replicas: int | None = Field(None, ge=0)
    min_scale: int | None = Field(None, ge=0)
    max_scale: int | None = Field(None, ge=0)
    container_concurrency: int | None = Field(None, ge=0)
    timeout_seconds: int | None = Field(None, ge=1, le=900)

    @model_validator(mode="after")
    def _by_type(self) -> Deployment:
        knative_only = ("min_scale", "max_scale", "container_concurrency", "timeout_seconds")
        if self.type == "knative" and self.replicas is not None:
            raise SpecIssue(("replicas",), "knative scales itself: use minScale/maxScale, "
                                           "not replicas")
        if self.type != "knative":
            for field in knative_only:
                if getattr(self, field) is not None:
                    raise SpecIssue((to_camel(field),), f"only for type knative (this is "
                                                        f"'{self.type}')")
        if self.type == "component" and not self.name:
            raise SpecIssue(("type",), "a component needs deployment.name")
        if (self.min_scale is not None and self.max_scale is not None
                and self.max_scale and self.min_scale > self.max_scale):
            raise SpecIssue(("minScale",), f"minScale {self.min_scale} is above maxScale "
                                           f"{self.max_scale}")
        return self


class DeploymentSpec(_Model):
    deployment: Deployment = Deployment()
    containers: list[Container] = Field(min_length=1)
    routes: list[Route] = []
    services: list[str] = []
    dependencies: list[Dependency] = []
    env: list[EnvDefault] = []

    @model_validator(mode="after")
    def _cross_checks(self) -> DeploymentSpec:
        names = [c.name for c in self.containers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise SpecIssue(("containers", i, "name"), f"container '{name}' given twice")
        for i, service in enumerate(self.services):
            if not re.match(_SERVICES, service):
                raise SpecIssue(("services", i), f"unknown service '{service}': one of "
                                                 "database, cache, storage, queue, workflows")
        for i, route in enumerate(self.routes):
            target = next((c for c in self.containers if c.name == route.to), None)
            if target is None:
                raise SpecIssue(("routes", i, "to"), f"no container named '{route.to}' "
                                                     f"(containers: {', '.join(names)})")
            if target.port is None:
                raise SpecIssue(("routes", i, "to"), f"container '{route.to}' has no port")
        _unique(self.env, "env", "variable")
        _unique(self.dependencies, "dependencies", "dependency")
        if self.deployment.type == "knative":
            self._knative_rules()
        return self

    def _knative_rules(self) -> None:
        if len(self.containers) != 1:
            raise SpecIssue(("containers",), f"a knative app has exactly one container "
                                             f"(got {len(self.containers)})")
        container = self.containers[0]
        if container.port is None:
            raise SpecIssue(("containers", 0), "a knative container needs a port")
        for field in ("gpu", "mounts", "schedule", "migrations", "capabilities"):
            if getattr(container, field):
                raise SpecIssue(("containers", 0, field), f"a knative app cannot have {field}")
        for i, service in enumerate(self.services):
            if service.split(":")[0] == "storage":
                raise SpecIssue(("services", i), "a knative app cannot use storage")


def _unique(items: list[Any], field: str, what: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise SpecIssue((field, i, "name"), f"{what} '{item.name}' given twice")
        seen.add(item.name)


class Metadata(_Model):
    name: str | None = Field(None, pattern=NAME + r"|^\{\{\s*project_name\s*\}\}$")


class ThinkubeDeployment(_Model):
    """A whole ``thinkube.yaml`` (``apiVersion: thinkube.io/v1``)."""

    api_version: Literal["thinkube.io/v1"]
    kind: Literal["ThinkubeDeployment"]
    metadata: Metadata | None = None
    spec: DeploymentSpec

    def container(self, name: str) -> Container:
        return next(c for c in self.spec.containers if c.name == name)

    @property
    def services(self) -> set[str]:
        """The platform services asked for, without their ``:name`` suffix."""
        return {s.split(":")[0] for s in self.spec.services}


def parse_thinkube(text: str, source: str = "thinkube.yaml") -> ThinkubeDeployment:
    """Validate ``text``; the first problem is a ConfigError ``source:line: field: why``."""
    doc = load_yaml(text, source)
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{source}: expected a mapping with apiVersion, kind and spec")
    try:
        return ThinkubeDeployment.model_validate(doc.data)
    except ValidationError as exc:
        error = relevant_errors(exc.errors(), doc)[0]
        loc, message = tuple(error["loc"]), error["msg"]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SpecIssue):
            loc, message = loc + cause.loc, str(cause)
        elif error["type"] == "literal_error" and loc[-1:] == ("size",):
            message = f"unknown size {error['input']!r}: one of {', '.join(SIZES)}"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = ("a GPU needs its memory too, e.g. memory: 20Gi"
                       if loc[-2:] == ("gpu", "memory") else "required field missing")
        raise doc.error(loc, message.removeprefix("Value error, ")) from None


def load_thinkube(path: Path) -> ThinkubeDeployment:
    """Read and validate a ``thinkube.yaml`` (errors name the file, line and field)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (a deployable project has a "
                          "thinkube.yaml at its root)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_thinkube(text, str(path))


def thinkube_json_schema() -> dict[str, Any]:
    """Our up-to-date JSON Schema of ``thinkube.yaml`` (generated from the model)."""
    schema = ThinkubeDeployment.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://agentcycle.dev/schemas/thinkube-yaml.json", **schema}


def schema_text() -> str:
    """The schema as shipped in ``thinkube.schema.json`` (stable key order)."""
    return json.dumps(thinkube_json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path() -> Path:
    return Path(__file__).with_name("thinkube.schema.json")
