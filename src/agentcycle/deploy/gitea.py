"""A small Gitea REST client: the deploy repository and its push webhook.

Only the endpoints the GitOps deploy needs (Gitea API v1, `Authorization: token T`):
the token's user, get/create/delete an organisation's repository, and the repository's
webhooks, kept to exactly one push hook per target URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

from agentcycle.deploy._http import ServiceClient

SERVICE = "Gitea"
HookChange = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class GiteaRepo:
    owner: str
    name: str
    clone_url: str
    ssh_url: str
    empty: bool

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> GiteaRepo:
        return cls(owner=body["owner"]["login"], name=body["name"],
                   clone_url=body["clone_url"], ssh_url=body.get("ssh_url", ""),
                   empty=bool(body.get("empty", False)))


@dataclass(frozen=True)
class HookResult:
    change: HookChange
    hook_id: int
    duplicates_deleted: int


def push_hook_spec(url: str, secret: str) -> dict[str, Any]:
    """The one push webhook Argo Events' `gitea-webhook` EventSource listens for."""
    return {"type": "gitea", "active": True, "events": ["push"],
            "config": {"url": url, "content_type": "json", "secret": secret}}


class Gitea(ServiceClient):
    """`with Gitea(url, token) as gitea: ...`; every failure is one ServiceError line."""

    SERVICE = SERVICE

    def __init__(self, url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(url, {"Authorization": f"token {token}"}, api="/api/v1",
                         timeout=timeout, transport=transport)

    def whoami(self) -> str:
        """The token's user (this is also the check that the token is accepted)."""
        return str(self._json("GET", "/user")["login"])

    def get_repo(self, owner: str, name: str) -> GiteaRepo | None:
        response = self._call("GET", f"/repos/{owner}/{name}", missing_ok=True)
        return GiteaRepo.from_api(response.json()) if response is not None else None

    def create_repo(self, org: str, name: str, description: str = "") -> GiteaRepo:
        body = {"name": name, "description": description, "private": True,
                "auto_init": False}
        return GiteaRepo.from_api(self._json("POST", f"/orgs/{org}/repos", json=body))

    def delete_repo(self, owner: str, name: str) -> None:
        self._call("DELETE", f"/repos/{owner}/{name}", missing_ok=True)

    def hooks(self, owner: str, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/repos/{owner}/{name}/hooks", params={"limit": 50}))

    def ensure_push_hook(self, owner: str, name: str, url: str, secret: str) -> HookResult:
        """Exactly one active push hook to `url`: duplicates are deleted, a drifted one
        is edited, a missing one created; an intact one is left alone."""
        spec = push_hook_spec(url, secret)
        ours = sorted((h for h in self.hooks(owner, name)
                       if (h.get("config") or {}).get("url") == url), key=lambda h: h["id"])
        for duplicate in ours[1:]:
            self._call("DELETE", f"/repos/{owner}/{name}/hooks/{duplicate['id']}",
                       missing_ok=True)
        if not ours:
            created = self._json("POST", f"/repos/{owner}/{name}/hooks", json=spec)
            return HookResult("created", int(created["id"]), 0)
        hook = ours[0]
        intact = (hook.get("type") == "gitea" and hook.get("active") is True
                  and sorted(hook.get("events") or []) == ["push"]
                  and hook["config"].get("content_type") == "json")
        if not intact:
            edit = {k: spec[k] for k in ("config", "events", "active")}
            self._call("PATCH", f"/repos/{owner}/{name}/hooks/{hook['id']}", json=edit)
        change: HookChange = "unchanged" if intact and len(ours) == 1 else "updated"
        return HookResult(change, int(hook["id"]), len(ours) - 1)
