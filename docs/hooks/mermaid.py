"""Serve mermaid with the docs, so "How it works" draws its diagrams offline.

Material for MkDocs loads mermaid from a CDN unless a global `mermaid` already
exists. This hook adds the pinned copy that `scripts/bootstrap.sh` fetched into
.cache/js/ (see scripts/js-deps.txt) as an extra script, and copies it into the
built site. A build without it stops with the command that fetches it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
SITE_PATH = "assets/javascripts/mermaid.min.js"


def _source() -> Path:
    for line in (ROOT / "scripts" / "js-deps.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "mermaid":
            name, version, file = fields
            return ROOT / ".cache" / "js" / f"{name}-{version}" / file
    raise PluginError("scripts/js-deps.txt names no mermaid version")


def on_config(config: Any) -> Any:
    """Check the local copy exists and load it before Material's own mermaid support."""
    if not _source().is_file():
        raise PluginError(
            f"{_source().relative_to(ROOT)} is missing: run WITH_TEST_DEPS=1 ./scripts/bootstrap.sh"
        )
    if SITE_PATH not in [str(script) for script in config["extra_javascript"]]:
        config["extra_javascript"].append(SITE_PATH)
    return config


def on_post_build(config: Any) -> None:
    """Copy the pinned mermaid into the built site."""
    target = Path(config["site_dir"]) / SITE_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_source(), target)
