"""MkDocs hooks for the documentation site (mkdocs.yml: ``hooks``).

The docstrings cross-reference in Sphinx's style (``:class:`AgentResult```), which
mkdocstrings renders as the role's text followed by the code: keep just the code.
"""

from __future__ import annotations

import re

SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|exc|data|obj|const):(?=<code)")


def on_page_content(html: str, **_: object) -> str:
    return SPHINX_ROLE.sub("", html)
