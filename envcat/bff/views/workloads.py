"""Workload trust policies (issue #16): list, create and delete, for admins."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, request

from envcat.bff import backend
from envcat.bff.backend import UpstreamError, api_path
from envcat.bff.identity import current_identity, login_required
from envcat.bff.views.forms import describe, page, submit
from envcat.core.schemas.bundles import BundleList
from envcat.core.schemas.workloads import (
    ServiceTokenCreated,
    ServiceTokenList,
    WorkloadPolicyList,
)

bp = Blueprint("workloads", __name__)

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
RULE_OPS = ("eq", "glob")
# the form's choice → the token's scopes (admin stands alone: issue #16, bundles as code)
TOKEN_SCOPES = {
    "release": ["release"],
    "scan": ["scan"],
    "release-scan": ["release", "scan"],
    "admin": ["admin"],
}


def parse_rules(text: str) -> list[dict[str, str]] | None:
    """One rule per line, `claim eq value` or `claim glob pattern`; None when a line is not."""
    rules = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split(None, 2)
        if len(parts) != 3 or parts[1] not in RULE_OPS:
            return None
        rules.append({"claim": parts[0], "op": parts[1], "value": parts[2]})
    return rules


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


@bp.get("/workloads")
@login_required
def index() -> Response:
    """The workspace's trust policies and the form to add one (admins only)."""
    identity = current_identity()
    try:
        policies = backend.fetch(WorkloadPolicyList, "/api/v1/workload-policies").items
    except UpstreamError as exc:
        if exc.status != 403:
            raise
        return page("workloads.html", 403, identity=identity, forbidden=True, policies=[])
    bundles = backend.fetch(BundleList, "/api/v1/bundles").bundles
    tokens = backend.fetch(ServiceTokenList, "/api/v1/service-tokens").items
    return page(
        "workloads.html",
        identity=identity,
        forbidden=False,
        policies=policies,
        tokens=tokens,
        bundles=bundles,
        github_issuer=GITHUB_ISSUER,
    )


@bp.post("/workloads")
@login_required
def create() -> Response:
    """Create a trust policy from the form."""
    rules = parse_rules(request.form.get("rules", ""))
    if rules is None:
        flash("Write one rule per line: a claim, then eq or glob, then the value.", "error")
        return redirect("/workloads")  # type: ignore[return-value]
    name = request.form.get("name", "").strip()
    body = {
        "name": name,
        "issuer": request.form.get("issuer", "").strip(),
        "audience": request.form.get("audience", "").strip(),
        "rules": rules,
        "bundle_id": request.form.get("bundle_id", ""),
        "keys": _names(request.form.get("keys", "")),
        "mode": request.form.get("mode", "approval"),
        "scan": request.form.get("scan") == "on",  # issue #19: may ask the scan oracle
    }
    done = f"Created the trust policy {name}."
    return submit("POST", "/api/v1/workload-policies", json=body, back="/workloads", done=done)


@bp.post("/workloads/<policy_id>/delete")
@login_required
def delete(policy_id: str) -> Response:
    """Delete a trust policy: its workloads get nothing more."""
    path = api_path("/api/v1/workload-policies/{policy_id}", policy_id=policy_id)
    return submit("DELETE", path, back="/workloads", done="Trust policy deleted.", ok=(204,))


@bp.post("/workloads/tokens")
@login_required
def create_token() -> Response:
    """Make a service token and show it on this one page (never stored by the bff)."""
    try:
        days = int(request.form.get("expires_in_days", "30"))
    except ValueError:
        days = 0
    scopes = TOKEN_SCOPES.get(request.form.get("scopes", "release"), ["release"])
    body: dict[str, Any] = {
        "name": request.form.get("name", "").strip(),
        "keys": _names(request.form.get("keys", "")),
        "expires_in_days": days,
        "scopes": scopes,
    }
    if "admin" not in scopes:  # an admin token is the workspace's, not a bundle's
        body["bundle_id"] = request.form.get("bundle_id", "")
    try:
        created = backend.send_as(
            ServiceTokenCreated, "POST", "/api/v1/service-tokens", json=body, ok=(201,)
        )
    except UpstreamError as exc:
        if exc.status in (401, 404):
            raise
        flash(describe(exc), "error")
        return redirect("/workloads")  # type: ignore[return-value]
    # rendered, not flashed: a flash would keep the token in the session record in Redis
    return page("workload_token.html", 201, identity=current_identity(), created=created)


@bp.post("/workloads/tokens/<token_id>/revoke")
@login_required
def revoke_token(token_id: str) -> Response:
    """Revoke a service token at once."""
    path = api_path("/api/v1/service-tokens/{token_id}", token_id=token_id)
    return submit("DELETE", path, back="/workloads", done="Service token revoked.", ok=(204,))
