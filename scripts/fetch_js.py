"""Fetch the pinned JavaScript of scripts/js-deps.txt from the npm registry, without npm.

For machines and images with Python but no npm (the docs stage of the Dockerfile):
the same tarball `npm pack` would fetch, checked against the registry's sha512
integrity, unpacked to .cache/js/<name>-<version>/ (the file and its LICENSE).

    python scripts/fetch_js.py            # every package
    python scripts/fetch_js.py mermaid    # only these
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = "https://registry.npmjs.org"
TIMEOUT_SECONDS = 60


def _pins() -> list[tuple[str, str, str]]:
    pins = []
    for line in (ROOT / "scripts" / "js-deps.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 3 and not fields[0].startswith("#"):
            pins.append((fields[0], fields[1], fields[2]))
    return pins


def _get(url: str) -> bytes:
    if not url.startswith("https://"):
        raise SystemExit(f"fetch_js: refusing a non-https url: {url}")
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as reply:  # noqa: S310 - https only
        data: bytes = reply.read()
        return data


def fetch(name: str, version: str, file: str) -> Path:
    """Download, verify and unpack one package's file; return its path."""
    dest = ROOT / ".cache" / "js" / f"{name}-{version}"
    if (dest / file).is_file():
        return dest / file
    meta = json.loads(_get(f"{REGISTRY}/{name}/{version}"))
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"fetch_js: {name}@{version}: unexpected integrity {algorithm}")
    tarball = _get(meta["dist"]["tarball"])
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != expected:
        raise SystemExit(f"fetch_js: {name}@{version}: the tarball does not match its integrity")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for wanted in (file, "LICENSE"):
            member = archive.extractfile(f"package/{wanted}")
            if member is None:
                raise SystemExit(f"fetch_js: {name}@{version} has no {wanted}")
            (dest / wanted).parent.mkdir(parents=True, exist_ok=True)
            (dest / wanted).write_bytes(member.read())
    return dest / file


def main(names: list[str]) -> None:
    """Fetch the named packages (all when none are named)."""
    for name, version, file in _pins():
        if not names or name in names:
            print(f"fetch_js: {fetch(name, version, file).relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
