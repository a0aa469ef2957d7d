"""The secret-scanning oracle (issue #19): which candidate hashes are the workspace's values.

A caller proves itself with a credential of the workspace that carries the scan
permission, decided in `_principal` alone: a service token with the "scan" scope, a
signed-in terminal's user token of a member or above (a viewer may not reveal values,
so it may not confirm guesses of them either), or a CI workload's OIDC ID token that a
trust policy with `scan` accepts (each token spent by one call). It is throttled to
SCAN_RATE_LIMIT calls a minute and SCAN_BATCH_MAX hashes a call, and learns key names
only. Each call is audited with counts; each newly reported leak is audited as `secret.leaked` (key,
file, line, commit; never the value) and the caller enqueues its notification.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from envcat.core.schemas.logins import USER_TOKEN_SCHEME
from envcat.core.schemas.scanning import (
    LeakReport,
    LeaksAlerted,
    ScanMatch,
    ScanMatches,
    ScanMatchQuery,
)
from envcat.services import (
    audit,
    fingerprints,
    service_tokens,
    user_tokens,
    workload_access,
    workspaces,
)
from envcat.services.approvers import ROLE_RANK
from envcat.services.errors import Forbidden, InvalidServiceToken, ValidationFailed
from envcat.services.runtime import current
from envcat.services.transactions import transaction

SCAN_MIN_ROLE = "member"  # who may reveal a value may confirm one; a viewer may not
LEAK_ALERT_SECONDS = 24 * 3600  # one alert per key, file and commit a day, however often CI runs


@dataclass(frozen=True)
class Principal:
    """Who scans: an id for the rate limit and a label for the audit."""

    tenant_id: str
    id: str
    label: str
    target: str


def _user(bearer: str, tenant_id: str) -> Principal:
    who = user_tokens.resolve(bearer, tenant_id)
    if ROLE_RANK.get(who.role, 0) < ROLE_RANK[SCAN_MIN_ROLE]:
        raise Forbidden(f"Scanning needs the {SCAN_MIN_ROLE} role; you are {who.role}.")
    return Principal(tenant_id, f"user:{who.user_id}", who.user_id, f"user_token:{who.token_id}")


def _principal(bearer: str | None, workspace_slug: str) -> Principal:
    """The scanning credential of this workspace (401 unknown, 403 without scan permission)."""
    workspace = workspaces.resolve(workspace_slug)
    if bearer is None:
        raise InvalidServiceToken(
            "Scanning needs a credential: Authorization: Bearer with a scan token, "
            "a signed-in terminal's token or a CI workload's ID token."
        )
    if bearer.startswith(f"{USER_TOKEN_SCHEME}_"):
        principal = _user(bearer, workspace.id)
    elif bearer.startswith("ect_"):  # a service token, however malformed: its own 401
        token_id, label = service_tokens.authorize_scan(bearer, tenant_id=workspace.id)
        principal = Principal(workspace.id, token_id, label, f"service_token:{token_id}")
    else:  # a JWT: a CI workload's ID token, spent by this call
        policy_id, label = workload_access.authorize_scan(
            bearer, tenant_id=workspace.id, workspace=workspace.slug
        )
        principal = Principal(workspace.id, policy_id, label, f"workload_policy:{policy_id}")
    limit = current().settings.scan_rate_limit
    service_tokens.throttle(f"scan:{principal.id}", limit, "This scanning credential")
    return principal


def check(bearer: str | None, body: ScanMatchQuery, origin: audit.Origin) -> ScanMatches:
    """Key names of the submitted hashes that are a current or kept value; audited (counts)."""
    most = current().settings.scan_batch_max
    if len(body.hashes) > most:
        raise ValidationFailed(f"Send at most {most} hashes per call.")
    who = _principal(bearer, body.workspace)
    found = fingerprints.matching_names(who.tenant_id, body.hashes)
    details = {"hashes": len(set(body.hashes)), "matched": len(found)}
    audit.record(
        who.tenant_id, who.label, "scan.checked", who.target, details=details, origin=origin
    )
    return ScanMatches(matches=[ScanMatch(sha256=h, keys=names) for h, names in found.items()])


def _first_alert(tenant_id: str, key: str, path: str, commit: str | None) -> bool:
    place = hashlib.sha256(f"{key}\0{path}\0{commit or ''}".encode()).hexdigest()[:32]
    mark = f"scan:alerted:{tenant_id}:{place}"
    return bool(current().redis.set(mark, "1", nx=True, ex=LEAK_ALERT_SECONDS))


def report(
    bearer: str | None, body: LeakReport, origin: audit.Origin
) -> tuple[LeaksAlerted, str, list[int]]:
    """Audit each re-checked leak not alerted today as `secret.leaked`.

    Returns the reply, the tenant id and the new events' ids (to notify after commit).
    """
    who = _principal(bearer, body.workspace)
    found = fingerprints.matching_names(who.tenant_id, [leak.sha256 for leak in body.leaks])
    events: list[int] = []
    keys: set[str] = set()
    with transaction():  # every alert of the report, or none
        for leak in body.leaks:
            for name in found.get(leak.sha256, []):
                keys.add(name)
                if not _first_alert(who.tenant_id, name, leak.path, leak.commit):
                    continue
                details = {
                    "key": name,
                    "path": leak.path,
                    "line": leak.line,
                    "commit": leak.commit,
                    "advice": f"Rotate {name}: its value is in a repository.",
                }
                event = audit.append(
                    who.tenant_id,
                    who.label,
                    "secret.leaked",
                    who.target,
                    details=details,
                    origin=origin,
                )
                events.append(event.id)
    return LeaksAlerted(alerted=len(events), keys=sorted(keys)), who.tenant_id, events
