"""The bff is zero-trust glue: it imports envcat.core only, and never a database layer."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("envcat.models", "envcat.services", "envcat.api", "envcat.workers", "sqlalchemy")
_PROBE = """
import importlib, json, pkgutil, sys
import envcat.bff
for module in pkgutil.walk_packages(envcat.bff.__path__, "envcat.bff."):
    if module.name != "envcat.bff.wsgi":  # wsgi reads the environment at import
        importlib.import_module(module.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_bff_imports_only_core_from_envcat() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    assert "envcat.bff.views.proxy" in loaded  # the probe really walked the package
    leaked = [m for m in loaded if m.startswith(FORBIDDEN)]
    assert leaked == []
