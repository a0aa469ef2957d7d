"""Shared helpers of the bundles-as-code tests (issue #16): the file, the CLI, the sign-in
store, the state."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from envcat.cli.main import cli
from envcat.cli.tokens import FileBackend, StoredLogin, entry_name
from tests.support.stack import LiveStack

ISSUER = "https://token.actions.githubusercontent.com"
FILE = """
[bundles."production/api"]
description = "{description}"
tags = ["prod"]
requesters = "members"

[bundles."production/api".keys]
DATABASE_URL = {{ required = {required} }}
STRIPE_KEY = {{ from = "STRIPE_LIVE_KEY" }}
{extra}

[bundles."production/api".approvers]
min_role = "admin"
users = ["{bob}"]
no_self_approval = true

[[bundles."production/api".workloads]]
name = "deploy from main"
issuer = "{issuer}"
audience = "https://envcat.example"
rules = [{{ claim = "repository", op = "eq", value = "acme/api" }}]
keys = ["DATABASE_URL"]
mode = "automatic"
scan = true
"""


def write_code(
    path: Path, bob: str, *, required: str = "true", description: str = "API", extra: str = ""
) -> None:
    """Write envcat.toml declaring production/api with `bob` as a named approver."""
    text = FILE.format(
        required=required, description=description, extra=extra, bob=bob, issuer=ISSUER
    )
    path.write_text(text)


def envcat_runner(
    stack: LiveStack, code: Path, slug: str, environ: Mapping[str, str]
) -> Callable[..., Result]:
    """`envcat(*args)`: the CLI in-process against the live bff, on `code` and workspace `slug`."""

    def envcat(*args: str) -> Result:
        with httpx.Client(base_url=stack.bff_url, timeout=30) as client:
            argv = [*args, "-f", str(code), "-w", slug, "--server", stack.bff_url]
            return CliRunner().invoke(cli, argv, obj=client, env=dict(environ))

    return envcat


def store_login(config_home: Path, server: str, slug: str, token: str) -> dict[str, str]:
    """Keep `token` in the file store as `envcat login` leaves it; the CLI's environment."""
    store = FileBackend(config_home / "envcat" / "tokens.json")
    stored = StoredLogin(token=token, workspace=slug, expires_at="2999-01-01T00:00:00+00:00")
    store.write(entry_name(server, slug), json.dumps(stored.__dict__))
    return {"XDG_CONFIG_HOME": str(config_home), "ENVCAT_TOKEN_STORE": "file"}


def bundles_of(stack: LiveStack, user: str, tenant: str) -> set[str]:
    """The names of the workspace's bundles, read as `user`."""
    with stack.signed(user, tenant) as api:
        return {b["name"] for b in api.get("/api/v1/bundles").json()["bundles"]}


def state_of(stack: LiveStack, user: str, tenant: str) -> dict[str, Any]:
    """The first bundle's keys, approvers, requesters and the policies, as plan/apply leave
    them."""
    with stack.signed(user, tenant) as api:
        listed = api.get("/api/v1/bundles").json()["bundles"]
        bundle = api.get(f"/api/v1/bundles/{listed[0]['id']}").json()
        rule = api.get(f"/api/v1/bundles/{bundle['id']}/approvers").json()
        policies = api.get("/api/v1/workload-policies").json()["items"]
        requesters = api.get(f"/api/v1/bundles/{bundle['id']}/requesters").json()
    return {
        "requesters": requesters["requesters"],
        "bundles": {b["name"] for b in listed},
        "keys": {(k["name"], k["alias"], k["required"]) for k in bundle["keys"]},
        "approvers": (
            rule["min_role"],
            [u["email"] for u in rule["users"]],
            rule["no_self_approval"],
        ),
        "policies": [(p["name"], p["mode"], p["keys"], p["scan"]) for p in policies],
    }
