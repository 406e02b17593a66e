"""One place that turns a REST call's failure into one line naming the service.

Gitea and ArgoCD answer errors with a JSON body (`{"message": ...}`, ArgoCD's gRPC
gateway adds `error` and `code`); the line quotes it, never the token.
"""

from __future__ import annotations

import re
from typing import Any, Self

import httpx

from agentcycle.errors import ServiceError


def plain(text: str) -> str:
    """`[uid: 0]` reads the same without brackets, which a terminal may take as markup."""
    return re.sub(r"\[([^\]]*)\]", r"\1", text)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return plain(response.text.strip()[:200] or response.reason_phrase)
    if isinstance(body, dict):
        body = body.get("message") or body.get("error") or body
    return plain(str(body)[:200])


def request(client: httpx.Client, service: str, method: str, path: str, *,
            missing_ok: bool = False, **kwargs: Any) -> httpx.Response | None:
    """Send one request; None for a 404 when `missing_ok`, else ServiceError on failure.
    `service` names it in the error: "Gitea at https://git.example.com"."""
    where = service
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TimeoutException:
        raise ServiceError(f"{where} did not answer {method} {path} in time") from None
    except httpx.HTTPError as exc:
        raise ServiceError(f"{where} is unreachable: {type(exc).__name__}: {exc}") from None
    if response.status_code == 404 and missing_ok:
        return None
    if response.status_code in (401, 403):
        raise ServiceError(f"{where} refused the token (HTTP {response.status_code} on "
                           f"{method} {path}: {_message(response)}); check the token and "
                           "its permissions")
    if response.status_code >= 400:
        raise ServiceError(f"{where}: {method} {path} failed with HTTP "
                           f"{response.status_code}: {_message(response)}")
    return response


class ServiceClient:
    """A REST client of one service (`SERVICE`): `with Client(url, token) as c: ...`."""

    SERVICE = "service"

    def __init__(self, url: str, headers: dict[str, str], *, api: str, timeout: float,
                 transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url + api, timeout=timeout,
                                    headers=headers | {"Accept": "application/json"},
                                    transport=transport, follow_redirects=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        return request(self._client, f"{self.SERVICE} at {self.url}", method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of a call that must succeed."""
        response = self._call(method, path, **kwargs)
        assert response is not None  # only missing_ok calls answer None
        return response.json()
