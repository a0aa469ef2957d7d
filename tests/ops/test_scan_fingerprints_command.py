"""`envcat server scan-fingerprints` (issue #19): backfill and re-key the scan fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner
from flask import Flask

from envcat.ops.commands import server
from envcat.services import fingerprints
from tests.support.api import SeedKey, seed_bundle

VALUE = "canary-backfill-value-3c9d"


def test_scan_fingerprints_backfills_existing_keys_and_reruns_harmlessly(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    seed_bundle("t-old", "legacy", [SeedKey("LEGACY_TOKEN", VALUE), SeedKey("PIN", "1234")])
    digest = hashlib.sha256(VALUE.encode()).hexdigest()
    assert fingerprints.matching_names("t-old", [digest]) == {}
    args = ["scan-fingerprints", "--data-dir", str(tmp_path)]
    first = CliRunner().invoke(server, args, env=server_env)
    assert first.exit_code == 0, first.output
    assert first.stderr == "scan-fingerprints: 1 fingerprinted, 1 too short, 0 not decryptable.\n"
    assert fingerprints.matching_names("t-old", [digest]) == {digest: ["LEGACY_TOKEN"]}
    second = CliRunner().invoke(server, args, env=server_env)
    assert second.stderr.startswith("scan-fingerprints: 0 fingerprinted, 1 too short")
    assert VALUE not in first.output + second.output
