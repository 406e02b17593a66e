"""pytest plugin: agent tests beside unit tests (registered through the pytest11 entry point).

Kept import-light: pytest loads it in every session of every project that installs us.
"""

from __future__ import annotations
