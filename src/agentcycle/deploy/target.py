"""Where and as what an app deploys: its name, the cluster's domain, the image tag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentcycle.errors import ConfigError

__all__ = ["DeployTarget", "git_image_tag"]

_APP = r"^[a-z][a-z0-9-]*$"  # the platform's project_name rule
_DOMAIN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,63}$"
_TAG = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # an OCI tag


class DeployTarget(BaseModel):
    """One app on one Thinkube cluster. ``image_tag`` is what the Deployments run (never
    ``latest``: a tag that moves makes a rollback or a diff meaningless); the build
    workflow tags each image with the pushed commit, so a commit SHA is the natural
    value (``git_image_tag``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_name: str = Field(pattern=_APP, max_length=40)
    domain: str = Field(pattern=_DOMAIN)
    image_tag: str = Field(pattern=_TAG)
    org: str = Field("thinkube-deployments", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    namespace: str = Field("", pattern=r"^$|" + _APP, max_length=63)
    registry: str = Field("", pattern=r"^$|^[a-z0-9.-]+(:[0-9]+)?$")
    parameters: dict[str, str | int | float | bool] = {}
    # A dependency (by its name or its type) -> the URL its variable gets; the defaults
    # (``DEPENDENCY_URLS``) are the platform's in-cluster services.
    service_urls: dict[str, str] = {}

    @model_validator(mode="after")
    def _defaults(self) -> DeployTarget:
        if self.image_tag == "latest":
            raise ValueError("image_tag 'latest' moves under the running app: give a "
                             "commit SHA or a version")
        for key in self.parameters:
            if not re.match(r"^[a-z_][a-z0-9_]*$", key):
                raise ValueError(f"parameter '{key}': snake_case names only")
        if not self.namespace:
            object.__setattr__(self, "namespace", self.app_name)
        if not self.registry:
            object.__setattr__(self, "registry", f"registry.{self.domain}")
        return self

    @classmethod
    def create(cls, **fields: object) -> DeployTarget:
        """``DeployTarget(...)`` with a ConfigError (one line) instead of pydantic's."""
        try:
            return cls(**fields)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            field = "".join(f"{p}: " for p in first["loc"][:1])
            raise ConfigError(f"deploy target: {field}"
                              f"{first['msg'].removeprefix('Value error, ')}") from None

    @property
    def host(self) -> str:
        return f"{self.app_name}.{self.domain}"

    @property
    def app_url(self) -> str:
        return f"https://{self.host}"

    @property
    def git_url(self) -> str:
        """The Gitea repository over HTTPS (the push and the build's clone)."""
        return f"https://git.{self.domain}/{self.org}/{self.app_name}.git"

    @property
    def ssh_url(self) -> str:
        """The Gitea repository over SSH (what ArgoCD reads)."""
        return f"ssh://git@git.{self.domain}:2222/{self.org}/{self.app_name}.git"

    def image(self, container: str) -> str:
        """The image repository of one container, without its tag."""
        return f"{self.registry}/thinkube/{self.app_name}-{container}"


def git_image_tag(project_dir: Path) -> str | None:
    """The project's HEAD commit (12 hex digits), or None outside a git work tree."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=project_dir,
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{7,40}", sha) else None
