"""Bundles as code (issue #16): `envcat.toml` parsed into what the workspace should hold.

The file declares bundles — description, tags, attached keys (by the name the bundle
exports, `from` naming the library key when it differs, `required`), approver
settings and workload trust policies — and never a value: a key it names must
already be in the workspace's library. Unknown fields are errors, so a typo cannot
silently declare nothing. See docs/bundles-as-code.md.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envcat.cli.errors import UsageProblem
from envcat.cli.formats import is_valid_name
from envcat.core.wire import is_workspace_slug

CODE_FILE = "envcat.toml"
ROLES = ("owner", "admin", "member", "none")
MODES = ("automatic", "approval")
RULE_OPS = ("eq", "glob")
_BUNDLE_FIELDS = {"description", "tags", "keys", "approvers", "workloads", "requesters"}
REQUESTERS = ("anyone", "members")  # who may request the bundle (issue #17)
_KEY_FIELDS = {"from", "required"}
_APPROVER_FIELDS = {"min_role", "users", "approvals_required", "no_self_approval"}
_WORKLOAD_FIELDS = {"name", "issuer", "audience", "rules", "keys", "mode", "scan"}


@dataclass(frozen=True)
class DeclaredKey:
    """A key the bundle exports as `export`, from library key `library`."""

    export: str
    library: str
    required: bool = False

    @property
    def alias(self) -> str | None:
        """The export name when it differs from the library key's name."""
        return self.export if self.export != self.library else None


@dataclass(frozen=True)
class DeclaredApprovers:
    """Who may approve: a minimum role (None = named users only), named emails, k, no-self."""

    min_role: str | None
    users: tuple[str, ...]
    approvals_required: int
    no_self_approval: bool


@dataclass(frozen=True)
class DeclaredWorkload:
    """A workload trust policy for the bundle (see docs/ci.md)."""

    name: str
    issuer: str
    audience: str
    rules: tuple[tuple[str, str, str], ...]
    keys: tuple[str, ...]
    mode: str
    scan: bool = False  # issue #19: the workload may also ask the scan oracle

    def body(self, bundle_id: str) -> dict[str, Any]:
        """The api's create/update body."""
        return {
            "name": self.name,
            "issuer": self.issuer,
            "audience": self.audience,
            "rules": [{"claim": c, "op": o, "value": v} for c, o, v in self.rules],
            "bundle_id": bundle_id,
            "keys": list(self.keys),
            "mode": self.mode,
            "scan": self.scan,
        }


@dataclass(frozen=True)
class DeclaredBundle:
    """One bundle as the file declares it."""

    name: str
    description: str
    tags: tuple[str, ...]
    keys: tuple[DeclaredKey, ...]
    approvers: DeclaredApprovers | None = None
    workloads: tuple[DeclaredWorkload, ...] = field(default_factory=tuple)
    requesters: str | None = None  # "anyone" | "members"; None: left as it is


@dataclass(frozen=True)
class Declaration:
    """The whole file: an optional workspace and the bundles."""

    path: Path
    workspace: str | None
    bundles: tuple[DeclaredBundle, ...]


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> UsageProblem:
        return UsageProblem(f"{self.path}: {where}: {problem}")

    def table(self, value: object, where: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(where, f"unknown field {unknown[0]!r} (allowed: {sorted(allowed)})")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "must be a string")
        return value

    def texts(self, value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "must be a list of strings")
        return tuple(value)

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false")
        return value

    def name(self, value: str, where: str) -> str:
        if not is_valid_name(value):
            raise self.fail(where, f"{value!r} is not a variable name")
        return value


def _keys(reader: _Reader, raw: object, where: str) -> tuple[DeclaredKey, ...]:
    if isinstance(raw, list):  # keys = ["A", "B"]: plain attachments
        return tuple(DeclaredKey(reader.name(n, where), n) for n in reader.texts(raw, where))
    table = reader.table(raw, where, set(raw) if isinstance(raw, dict) else set())
    keys = []
    for export, spec in table.items():
        here = f"{where}.{export}"
        entry = reader.table(spec, here, _KEY_FIELDS)
        library = reader.text(entry.get("from", export), f"{here}.from")
        required = reader.flag(entry.get("required", False), f"{here}.required")
        keys.append(DeclaredKey(reader.name(export, here), reader.name(library, here), required))
    return tuple(keys)


def _approvers(reader: _Reader, raw: object, where: str) -> DeclaredApprovers:
    table = reader.table(raw, where, _APPROVER_FIELDS)
    role = reader.text(table.get("min_role", "member"), f"{where}.min_role")
    if role not in ROLES:
        raise reader.fail(f"{where}.min_role", f"must be one of {', '.join(ROLES)}")
    k = table.get("approvals_required", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise reader.fail(f"{where}.approvals_required", "must be a whole number, 1 or more")
    return DeclaredApprovers(
        min_role=None if role == "none" else role,
        users=tuple(u.lower() for u in reader.texts(table.get("users", []), f"{where}.users")),
        approvals_required=k,
        no_self_approval=reader.flag(
            table.get("no_self_approval", False), f"{where}.no_self_approval"
        ),
    )


def _workload(reader: _Reader, raw: object, where: str) -> DeclaredWorkload:
    table = reader.table(raw, where, _WORKLOAD_FIELDS)
    rules = []
    for index, rule in enumerate(table.get("rules", [])):
        here = f"{where}.rules[{index}]"
        entry = reader.table(rule, here, {"claim", "op", "value"})
        op = reader.text(entry.get("op", "eq"), f"{here}.op")
        if op not in RULE_OPS:
            raise reader.fail(f"{here}.op", f"must be one of {', '.join(RULE_OPS)}")
        claim = reader.text(entry.get("claim"), f"{here}.claim")
        rules.append((claim, op, reader.text(entry.get("value"), f"{here}.value")))
    mode = reader.text(table.get("mode", "approval"), f"{where}.mode")
    if mode not in MODES:
        raise reader.fail(f"{where}.mode", f"must be one of {', '.join(MODES)}")
    return DeclaredWorkload(
        name=reader.text(table.get("name"), f"{where}.name"),
        issuer=reader.text(table.get("issuer"), f"{where}.issuer"),
        audience=reader.text(table.get("audience"), f"{where}.audience"),
        rules=tuple(rules),
        keys=reader.texts(table.get("keys", []), f"{where}.keys"),
        mode=mode,
        scan=reader.flag(table.get("scan", False), f"{where}.scan"),
    )


def _bundle(reader: _Reader, name: str, raw: object) -> DeclaredBundle:
    where = f"bundles.{name!r}"
    table = reader.table(raw, where, _BUNDLE_FIELDS)
    workloads = table.get("workloads", [])
    if not isinstance(workloads, list):
        raise reader.fail(f"{where}.workloads", "must be an array of tables ([[…workloads]])")
    return DeclaredBundle(
        name=name,
        description=reader.text(table.get("description", ""), f"{where}.description"),
        tags=reader.texts(table.get("tags", []), f"{where}.tags"),
        keys=_keys(reader, table.get("keys", []), f"{where}.keys"),
        approvers=(
            _approvers(reader, table["approvers"], f"{where}.approvers")
            if "approvers" in table
            else None
        ),
        workloads=tuple(
            _workload(reader, w, f"{where}.workloads[{i}]") for i, w in enumerate(workloads)
        ),
        requesters=_requesters(reader, table.get("requesters"), f"{where}.requesters"),
    )


def _requesters(reader: _Reader, raw: object, where: str) -> str | None:
    if raw is None:
        return None
    if raw not in REQUESTERS:
        raise reader.fail(where, f"must be one of {list(REQUESTERS)}")
    return str(raw)


def load(path: Path) -> Declaration:
    """Parse and check `path`; UsageProblem (exit 2) naming the place of any mistake."""
    reader = _Reader(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageProblem(f"{path} does not exist (see docs/bundles-as-code.md)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from None
    top = reader.table(data, "top level", {"workspace", "bundles"})
    workspace = top.get("workspace")
    if workspace is not None and not (isinstance(workspace, str) and is_workspace_slug(workspace)):
        raise reader.fail("workspace", "must be a workspace slug")
    raw_bundles = top.get("bundles", {})
    bundles = reader.table(
        raw_bundles, "bundles", set(raw_bundles) if isinstance(raw_bundles, dict) else set()
    )
    return Declaration(
        path=path,
        workspace=workspace,
        bundles=tuple(_bundle(reader, name, spec) for name, spec in bundles.items()),
    )
