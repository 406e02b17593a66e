"""ArgoCD's REST API: the deploy repository's credentials and the app's Application.

Bearer-token calls to `/api/v1/repositories` and `/api/v1/applications` (the API the
`argocd` CLI's gRPC gateway serves). The Application is written with `validate=false`:
it is created before the first push, when the repository has no `k8s/` yet, so that an
image webhook never fires for an app ArgoCD does not know. The Application object itself
is generated with the manifests (`agentcycle.deploy.manifests.argocd_application`).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from agentcycle.deploy._http import ServiceClient

SERVICE = "ArgoCD"
Change = Literal["created", "updated", "unchanged"]


def server_url(server: str) -> str:
    """ARGOCD_SERVER is usually a bare host (`argocd.example.com`), as the CLI takes it."""
    return server if "://" in server else f"https://{server}"


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` holds everything of `wanted` (ArgoCD adds defaults of its own)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            _contains(actual.get(key), value) for key, value in wanted.items())
    return actual == wanted


class ArgoCD(ServiceClient):
    """`with ArgoCD(server, token) as argocd: ...`; every failure is one ServiceError line."""

    SERVICE = SERVICE

    def __init__(self, server: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(server_url(server), {"Authorization": f"Bearer {token}"},
                         api="/api/v1", timeout=timeout, transport=transport)

    # -- repositories -------------------------------------------------------------
    def repositories(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/repositories").get("items") or [])

    def ensure_repository(self, repo_url: str, username: str, password: str,
                          *, name: str | None = None) -> Change:
        """Register the repository's HTTPS credentials (ArgoCD stores them in a Secret
        labelled `argocd.argoproj.io/secret-type: repository`); left alone while they
        are the same user's and ArgoCD reads the repository with them."""
        known = next((r for r in self.repositories() if r.get("repo") == repo_url), None)
        state = ((known or {}).get("connectionState") or {}).get("status", "Successful")
        if known is not None and known.get("username") == username and state == "Successful":
            return "unchanged"  # a rotated token shows as a Failed connection: re-saved
        body = {"repo": repo_url, "type": "git", "username": username, "password": password}
        if name:
            body["name"] = name
        self._call("POST", "/repositories", params={"upsert": "true"}, json=body)
        return "created" if known is None else "updated"

    # -- applications -------------------------------------------------------------
    def get_application(self, name: str, project: str = "default") -> dict[str, Any] | None:
        """The Application, None when missing. The project must be given: without it
        ArgoCD answers 403 for a missing app, not to leak which apps exist."""
        response = self._call("GET", f"/applications/{name}", params={"project": project},
                              missing_ok=True)
        return response.json() if response is not None else None

    def ensure_application(self, app: dict[str, Any]) -> Change:
        """Create the Application, or update it where it differs from `app`."""
        name = app["metadata"]["name"]
        current = self.get_application(name, app["spec"].get("project", "default"))
        if current is None:
            self._call("POST", "/applications", params={"validate": "false"}, json=app)
            return "created"
        wanted_labels = app["metadata"].get("labels") or {}
        if _contains(current.get("spec"), app["spec"]) and _contains(
                current.get("metadata", {}).get("labels") or {}, wanted_labels):
            return "unchanged"
        update = {**app, "metadata": {**current.get("metadata", {}), **app["metadata"]}}
        self._call("PUT", f"/applications/{name}", params={"validate": "false"}, json=update)
        return "updated"

    def delete_application(self, name: str, project: str = "default") -> None:
        """Remove the Application only (`cascade=false`: nothing it deployed is touched)."""
        self._call("DELETE", f"/applications/{name}",
                   params={"cascade": "false", "project": project}, missing_ok=True)
