"""One place that turns a REST call's failure into one line naming the service.

Gitea and ArgoCD answer errors with a JSON body (`{"message": ...}`, ArgoCD's gRPC
gateway adds `error` and `code`); the line quotes it, never the token.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from agentcycle.errors import ServiceError


def service_client(base_url: str, headers: dict[str, str], timeout: float,
                   transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                        transport=transport, follow_redirects=False)


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
