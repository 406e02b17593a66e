"""What a credential looks like, by its variable's name or by its value: shared by the
``thinkube.yaml`` checks and the manifests' secret scan."""

from __future__ import annotations

import re

CREDENTIAL_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|MASTER_?KEY|"
    r"CREDENTIAL|AUTH_?KEY)", re.IGNORECASE)
CREDENTIAL_VALUE = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@{}]+:[^/\s@{}]+@"), "a URL with a password"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "an API key (sk-...)"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "an AWS access key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), "a GitHub token"),
    (re.compile(r"\b(pk|sk)-lf-[A-Za-z0-9-]{8,}"), "a Langfuse key"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."), "a JWT"),
]


def secret_like(value: str) -> str | None:
    """What kind of secret ``value`` looks like, or None."""
    return next((what for pattern, what in CREDENTIAL_VALUE if pattern.search(value)), None)


def credential_problem(name: str, value: str) -> str | None:
    """Why the variable ``name=value`` must not be written into git, or None."""
    if value and CREDENTIAL_NAME.search(name):
        return "a credential as a plain value"
    what = secret_like(value)
    return f"looks like {what}" if what else None
