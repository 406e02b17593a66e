"""Stand-ins for the two servers a GitOps deploy talks to (neither can run here).

`GiteaStandin`: a REAL git server (`git http-backend` as CGI: git's smart HTTP, token
auth) plus the handful of Gitea API v1 endpoints `agentcycle deploy` uses, with Gitea's
paths, payloads, status codes and error bodies (`{"message": ..., "url": ...}`).
`ArgoCDStandin`: ArgoCD's `/api/v1/applications` and `/api/v1/repositories` with its gRPC
gateway's error bodies (`{"error", "code", "message"}`), bearer tokens, and `validate`
(on by default: the Application's path must exist in the repository).
Both record every write, so a test can say "a second deploy changed nothing".
"""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
from pathlib import Path
from typing import Any, Self

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from helpers import BackgroundServer

_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent", "LC_ALL": "C"}


def _bearer_or_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer"):
        return value.strip()
    if scheme.lower() == "basic":
        user_pass = base64.b64decode(value).decode(errors="replace")
        return user_pass.partition(":")[2]
    return request.query_params.get("token") or request.query_params.get("access_token")


class _Served:
    """A FastAPI app (`_app`) on 127.0.0.1 for the `with` block; every request and every
    write recorded."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.requests: list[str] = []
        self._server = BackgroundServer(self._app())

    def _app(self) -> FastAPI:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> Self:
        self._server.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.__exit__(*exc)


class GiteaStandin(_Served):
    """`with GiteaStandin(root, token="t") as gitea:` serves on 127.0.0.1 until exit."""

    def __init__(self, root: Path, *, token: str, user: str = "deployer",
                 orgs: tuple[str, ...] = ("thinkube-deployments",),
                 read_only_tokens: tuple[str, ...] = ()):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token, self.user, self.orgs = token, user, set(orgs)
        self.read_only_tokens = set(read_only_tokens)
        self.repos: dict[tuple[str, str], dict[str, Any]] = {}
        self.hooks: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.hook_secrets: dict[int, str] = {}
        self.pre_receive: str | None = None  # a script installed in each new repository
        self._ids = itertools.count(1)
        super().__init__()

    # -- helpers for tests ----------------------------------------------------------
    def bare(self, owner: str, name: str) -> Path:
        return self.root / owner / f"{name}.git"

    def git(self, owner: str, name: str, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.bare(owner, name), text=True,
                              capture_output=True, check=True, env=os.environ | _GIT_ENV)
        return done.stdout

    def set_pre_receive(self, owner: str, name: str, script: str | None) -> None:
        hook = self.bare(owner, name) / "hooks" / "pre-receive"
        if script is None:
            hook.unlink(missing_ok=True)
            return
        hook.write_text(script)
        hook.chmod(0o755)

    # -- the server ------------------------------------------------------------------
    def _error(self, status: int, message: str) -> JSONResponse:
        return JSONResponse({"message": message, "url": f"{self.url}/api/swagger"}, status)

    def _repo_json(self, owner: str, name: str) -> dict[str, Any]:
        repo = self.repos[(owner, name)]
        refs = subprocess.run(["git", "for-each-ref"], cwd=self.bare(owner, name),
                              text=True, capture_output=True, env=os.environ | _GIT_ENV)
        return repo | {"empty": not refs.stdout.strip()}

    def _auth(self, request: Request, *, write: bool) -> JSONResponse | None:
        token = _bearer_or_token(request)
        if not token:
            return self._error(401, "token is required")
        if token not in {self.token, *self.read_only_tokens}:
            return self._error(401, "user does not exist [uid: 0, name: , keyid: 0]")
        if write and token in self.read_only_tokens:
            return self._error(403, "token does not have at least one of required scope(s), "
                                    "required=[write:organization write:repository]")
        return None

    def _app(self) -> FastAPI:  # noqa: C901 - one small server, its routes side by side
        app = FastAPI()
        api = "/api/v1"

        @app.middleware("http")
        async def record(request: Request, call_next):
            self.requests.append(f"{request.method} {request.url.path}")
            if request.method not in ("GET", "HEAD") and request.url.path.startswith(api):
                self.writes.append(f"{request.method} {request.url.path}")
            if request.url.path.startswith(api):
                refused = self._auth(request, write=request.method != "GET")
                if refused is not None:
                    return refused
            return await call_next(request)

        @app.get(api + "/user")
        async def user():
            return {"id": 1, "login": self.user, "full_name": "", "email": f"{self.user}@x"}

        @app.get(api + "/repos/{owner}/{name}")
        async def get_repo(owner: str, name: str):
            if (owner, name) not in self.repos:
                return self._error(404, "The target couldn't be found.")
            return self._repo_json(owner, name)

        @app.post(api + "/orgs/{org}/repos")
        async def create_repo(org: str, request: Request):
            body = await request.json()
            name = body.get("name") or ""
            if org not in self.orgs:
                return self._error(404, "GetOrgByName")
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                return self._error(422, "[Name]: invalid characters")
            if (org, name) in self.repos:
                return self._error(409, "The repository with the same name already exists.")
            bare = self.bare(org, name)
            subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)],
                           check=True, env=os.environ | _GIT_ENV)
            if self.pre_receive:
                self.set_pre_receive(org, name, self.pre_receive)
            self.repos[(org, name)] = {
                "id": next(self._ids), "owner": {"id": 2, "login": org}, "name": name,
                "full_name": f"{org}/{name}", "description": body.get("description", ""),
                "private": bool(body.get("private")), "default_branch": "main",
                "clone_url": f"{self.url}/{org}/{name}.git",
                "ssh_url": f"ssh://git@127.0.0.1:2222/{org}/{name}.git",
                "html_url": f"{self.url}/{org}/{name}"}
            self.hooks[(org, name)] = []
            return JSONResponse(self._repo_json(org, name), 201)

        @app.delete(api + "/repos/{owner}/{name}")
        async def delete_repo(owner: str, name: str):
            if self.repos.pop((owner, name), None) is None:
                return self._error(404, "The target couldn't be found.")
            self.hooks.pop((owner, name), None)
            subprocess.run(["rm", "-rf", str(self.bare(owner, name))], check=True)
            return Response(status_code=204)

        @app.get(api + "/repos/{owner}/{name}/hooks")
        async def list_hooks(owner: str, name: str):
            if (owner, name) not in self.repos:
                return self._error(404, "The target couldn't be found.")
            return self.hooks[(owner, name)]

        @app.post(api + "/repos/{owner}/{name}/hooks")
        async def create_hook(owner: str, name: str, request: Request):
            if (owner, name) not in self.repos:
                return self._error(404, "The target couldn't be found.")
            body = await request.json()
            config = body.get("config") or {}
            if body.get("type") not in ("gitea", "gogs", "slack", "discord", "msteams"):
                return self._error(422, "Invalid hook type")
            if not config.get("url") or config.get("content_type") not in ("json", "form"):
                return self._error(422, "Invalid content type")
            hook = {"id": next(self._ids), "type": body["type"], "branch_filter": "*",
                    "config": {"url": config["url"], "content_type": config["content_type"]},
                    "events": body.get("events") or ["push"],
                    "active": bool(body.get("active")), "authorization_header": ""}
            self.hook_secrets[hook["id"]] = config.get("secret", "")
            self.hooks[(owner, name)].append(hook)
            return JSONResponse(hook, 201)

        @app.patch(api + "/repos/{owner}/{name}/hooks/{hook_id}")
        async def edit_hook(owner: str, name: str, hook_id: int, request: Request):
            hook = next((h for h in self.hooks.get((owner, name), []) if h["id"] == hook_id),
                        None)
            if hook is None:
                return self._error(404, "The target couldn't be found.")
            body = await request.json()
            config = body.get("config") or {}
            hook["config"] |= {k: v for k, v in config.items() if k != "secret"}
            if "secret" in config:
                self.hook_secrets[hook_id] = config["secret"]
            for key in ("events", "active"):
                if key in body:
                    hook[key] = body[key]
            return hook

        @app.delete(api + "/repos/{owner}/{name}/hooks/{hook_id}")
        async def delete_hook(owner: str, name: str, hook_id: int):
            hooks = self.hooks.get((owner, name), [])
            if not any(h["id"] == hook_id for h in hooks):
                return self._error(404, "The target couldn't be found.")
            self.hooks[(owner, name)] = [h for h in hooks if h["id"] != hook_id]
            return Response(status_code=204)

        @app.api_route("/{owner}/{repo}.git/{rest:path}", methods=["GET", "POST"])
        async def smart_http(owner: str, repo: str, rest: str, request: Request):
            token = _bearer_or_token(request)
            pushing = "git-receive-pack" in (rest + request.url.query)
            if token not in {self.token, *self.read_only_tokens}:
                return Response("Unauthorized\n", 401,
                                {"WWW-Authenticate": 'Basic realm="Gitea"'})
            if (owner, repo) not in self.repos:
                return Response("Not found.\n", 404)
            if pushing and token in self.read_only_tokens:
                return Response("User permission denied for writing.\n", 403)
            body = await request.body()
            return await run_in_threadpool(self._cgi, owner, repo, rest, request, body)

        return app

    def _cgi(self, owner: str, repo: str, rest: str, request: Request, body: bytes) -> Response:
        env = os.environ | _GIT_ENV | {
            "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{owner}/{repo}.git/{rest}", "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.url.query, "REMOTE_USER": self.user,
            "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "HTTP_CONTENT_ENCODING": request.headers.get("content-encoding", ""),
            "GIT_PROTOCOL": request.headers.get("git-protocol", "")}
        done = subprocess.run(["git", "http-backend"], input=body, env=env,
                              capture_output=True, timeout=60)
        head, sep, payload = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = done.stdout.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers[key] = value.strip()
        return Response(payload, status, headers)


class ArgoCDStandin(_Served):
    """ArgoCD's API server, its applications and repositories; `gitea` resolves repoURLs
    for `validate`."""

    def __init__(self, *, token: str, gitea: GiteaStandin | None = None):
        self.token, self.gitea = token, gitea
        self.applications: dict[str, dict[str, Any]] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self._versions = itertools.count(1000)
        super().__init__()

    @staticmethod
    def _error(status: int, code: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "code": code, "message": message}, status)

    def _path_missing(self, app: dict[str, Any]) -> str | None:
        source = app.get("spec", {}).get("source", {})
        repo = next(((o, n) for (o, n), r in (self.gitea.repos if self.gitea else {}).items()
                     if r["clone_url"] == source.get("repoURL")), None)
        path = source.get("path", "")
        if repo is not None:
            found = subprocess.run(["git", "ls-tree", "-d", "HEAD", path],
                                   cwd=self.gitea.bare(*repo), capture_output=True, text=True)
            if found.returncode == 0 and found.stdout.strip():
                return None
        return (f"application spec for {app['metadata']['name']} is invalid: "
                f"InvalidSpecError: Unable to generate manifests in {path}: rpc error: "
                f"code = Unknown desc = {path}: app path does not exist")

    @staticmethod
    def _connect(repository: dict[str, Any]) -> str | None:
        """ArgoCD checks a repository with its credentials before saving it: so does this
        (`git ls-remote` with them, as the repo server would)."""
        basic = base64.b64encode(
            f"{repository.get('username', '')}:{repository.get('password', '')}".encode())
        env = os.environ | _GIT_ENV | {
            "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic.decode()}"}
        done = subprocess.run(["git", "ls-remote", repository["repo"]], env=env,
                              capture_output=True, text=True, timeout=30)
        return None if done.returncode == 0 else "authentication required"

    def _invalid(self, request: Request, app: dict[str, Any]) -> str | None:
        if request.query_params.get("validate", "true") == "false":
            return None
        return self._path_missing(app)

    def _stored(self, app: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        meta = dict(app["metadata"])
        meta.setdefault("namespace", "argocd")
        meta["uid"] = (current or {}).get("metadata", {}).get("uid", f"uid-{meta['name']}")
        meta["resourceVersion"] = str(next(self._versions))
        spec = dict(app["spec"])
        spec["source"] = {**spec.get("source", {})}
        return {"metadata": meta, "spec": spec,
                "status": {"sync": {"status": "Unknown"}, "health": {"status": "Missing"}}}

    def _app(self) -> FastAPI:  # noqa: C901
        app = FastAPI()
        api = "/api/v1"

        @app.middleware("http")
        async def auth(request: Request, call_next):
            self.requests.append(f"{request.method} {request.url.path}")
            if request.method != "GET":
                self.writes.append(f"{request.method} {request.url.path}")
            header = request.headers.get("authorization", "")
            if not header:
                return self._error(401, 16, "no session information")
            if header != f"Bearer {self.token}":
                return self._error(401, 16, "invalid session: token signature is invalid")
            return await call_next(request)

        def missing(name: str, request: Request) -> JSONResponse | None:
            """ArgoCD (since GHSA-2q5c-qw9c-fmvq) answers 403 for a missing app unless the
            request names the project; then 404, also for an app of another project."""
            project = request.query_params.get("project")
            app = self.applications.get(name)
            if app is not None and project in (None, app["spec"].get("project")):
                return None
            if project is None:
                return self._error(403, 7, "permission denied")
            return self._error(404, 5, f'applications.argoproj.io "{name}" not found')

        @app.get(api + "/applications/{name}")
        async def get_app(name: str, request: Request):
            return missing(name, request) or self.applications[name]

        @app.post(api + "/applications")
        async def create_app(request: Request):
            body = await request.json()
            name = body.get("metadata", {}).get("name")
            if not name or not body.get("spec", {}).get("destination"):
                return self._error(400, 3, "application spec is invalid: missing name or "
                                           "destination")
            current = self.applications.get(name)
            upsert = request.query_params.get("upsert") == "true"
            if current is not None and current["spec"] != body["spec"] and not upsert:
                return self._error(400, 3, "existing application spec is different, use "
                                           "upsert flag to force update")
            if (problem := self._invalid(request, body)) is not None:
                return self._error(400, 3, problem)
            self.applications[name] = self._stored(body, current)
            return self.applications[name]

        @app.put(api + "/applications/{name}")
        async def update_app(name: str, request: Request):
            body = await request.json()
            if body.get("metadata", {}).get("name") != name:
                return self._error(400, 3, "metadata.name does not match the path")
            if name not in self.applications:
                return self._error(404, 5, f'applications.argoproj.io "{name}" not found')
            if (problem := self._invalid(request, body)) is not None:
                return self._error(400, 3, problem)
            self.applications[name] = self._stored(body, self.applications[name])
            return self.applications[name]

        @app.delete(api + "/applications/{name}")
        async def delete_app(name: str, request: Request):
            if (refused := missing(name, request)) is not None:
                return refused
            del self.applications[name]
            return {}

        @app.get(api + "/repositories")
        async def list_repos():
            def state(repository: dict[str, Any]) -> dict[str, str]:
                problem = self._connect(repository)
                return {"status": "Failed", "message": problem} if problem else {
                    "status": "Successful", "message": ""}

            items = [{k: v for k, v in r.items() if k != "password"}
                     | {"connectionState": await run_in_threadpool(state, r)}
                     for r in self.repositories.values()]
            return {"metadata": {}, "items": items or None}

        @app.post(api + "/repositories")
        async def create_repo(request: Request):
            body = await request.json()
            url = body.get("repo")
            if not url:
                return self._error(400, 3, "repo is required")
            current = self.repositories.get(url)
            if current is not None and current != body and \
                    request.query_params.get("upsert") != "true":
                return self._error(400, 3, "existing repository spec is different; use "
                                           "upsert flag to force update")
            if (problem := await run_in_threadpool(self._connect, body)) is not None:
                return self._error(400, 3, f"Unable to connect to repository: {problem}")
            self.repositories[url] = body
            return {k: v for k, v in body.items() if k != "password"}

        return app
