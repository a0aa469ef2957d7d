"""How `envcat scan` shows its findings (issue #19): a table, JSON, or SARIF 2.1.0.

SARIF is what GitHub code scanning uploads: one rule per detector plus
`envcat.workspace-value` for the workspace's own values. A finding shows the
masked secret only (first two characters and the length).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from envcat import __version__
from envcat.cli.display import safe_text
from envcat.cli.scan_detect import OWN_VALUE_RULE, Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/envcat/envcat/blob/main/docs/scanning.md"


def _where(finding: Finding) -> str:
    where = f"{finding.path}:{finding.line}"
    return f"{where} @ {finding.commit[:12]}" if finding.commit else where


def _what(finding: Finding) -> str:
    if finding.key is not None:
        return f"value of workspace key {finding.key}: rotate it"
    return finding.detector


def table(findings: Sequence[Finding]) -> str:
    """One line per finding, aligned; a last line with the count."""
    if not findings:
        return "No secrets found.\n"
    rows = [("LOCATION", "FINDING", "SECRET")] + [
        (safe_text(_where(f), 200), _what(f), f.masked) for f in findings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]
    lines.append(f"{len(findings)} finding(s).")
    return "\n".join(lines) + "\n"


def _as_dict(finding: Finding) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "detector": finding.detector,
        "path": finding.path,
        "line": finding.line,
        "commit": finding.commit,
        "key": finding.key,
        "secret": finding.masked,
    }


def as_json(findings: Sequence[Finding], *, own_values_checked: bool) -> str:
    """{"findings": [...], "own_values_checked": bool} as one JSON document."""
    body = {"findings": [_as_dict(f) for f in findings], "own_values_checked": own_values_checked}
    return json.dumps(body, indent=2) + "\n"


def _rule(rule_id: str, detector: str) -> dict[str, Any]:
    if rule_id == OWN_VALUE_RULE:
        text = "A value of one of the EnvCat workspace's keys is in the repository."
        advice = "Rotate the key in EnvCat (its value is exposed), then remove it from the code."
    else:
        text = f"detect-secrets: {detector}."
        advice = "If this is a real secret, rotate it and remove it from the code and its history."
    return {
        "id": rule_id,
        "name": rule_id.replace(".", "/"),
        "shortDescription": {"text": text},
        "fullDescription": {"text": text},
        "help": {"text": advice},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["security", "secrets"]},
    }


def _result(finding: Finding, index: int) -> dict[str, Any]:
    place = f"{finding.rule}|{finding.path}|{finding.commit or ''}|{finding.masked}"
    properties: dict[str, Any] = {"secret": finding.masked}
    if finding.commit:
        properties["commit"] = finding.commit
    if finding.key:
        properties["key"] = finding.key
    where = f" (commit {finding.commit})" if finding.commit else ""
    return {
        "ruleId": finding.rule,
        "ruleIndex": index,
        "level": "error",
        "message": {"text": f"{_what(finding)}: {finding.masked}{where}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": finding.path},
                    "region": {"startLine": finding.line},
                }
            }
        ],
        "partialFingerprints": {"envcatFinding/v1": hashlib.sha256(place.encode()).hexdigest()},
        "properties": properties,
    }


def as_sarif(findings: Sequence[Finding]) -> str:
    """A SARIF 2.1.0 log with one run: envcat's rules and a result per finding."""
    rules: dict[str, int] = {}
    described: list[dict[str, Any]] = [_rule(OWN_VALUE_RULE, "")]
    rules[OWN_VALUE_RULE] = 0
    for finding in findings:
        if finding.rule not in rules:
            rules[finding.rule] = len(described)
            described.append(_rule(finding.rule, finding.detector))
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "envcat",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": described,
                    }
                },
                "results": [_result(f, rules[f.rule]) for f in findings],
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"
