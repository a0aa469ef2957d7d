"""Which `/api/v1/` routes a terminal's bearer may call through the bff (issue #16).

A user token (`envcat login`, `ecu_…`) may administer what bundles as code touches and
read what a person reads, but never decide a request, read a value (`?reveal`,
versions, export) or manage passkeys. An admin service token (`ect_…` with the
`admin` scope) gets exactly the subset of those routes `envcat plan`/`apply` use, and
no route that names a person (`me…`, member changes) or moves a value. The bff checks
both before forwarding; the api checks the admin-token table again for its synthetic
caller, so a bug in one place does not open the other.
"""

from __future__ import annotations

import re
from collections.abc import Collection

_ID = r"[^/]+"
USER_TOKEN_ROUTES = re.compile(r"(bundles|keys|workload-policies|members|me|workspace)(/[^/]+)*")
USER_TOKEN_REFUSED = re.compile(r".*/(export|versions)(/.*)?")
# (methods, path): what `envcat plan` reads and `envcat apply` writes, nothing more.
ADMIN_TOKEN_ROUTES = (
    ({"GET", "POST"}, re.compile(r"bundles")),
    ({"GET", "PATCH", "DELETE"}, re.compile(rf"bundles/{_ID}")),
    ({"POST"}, re.compile(rf"bundles/{_ID}/keys")),
    ({"DELETE"}, re.compile(rf"bundles/{_ID}/keys/{_ID}")),
    ({"GET", "PUT"}, re.compile(rf"bundles/{_ID}/approvers")),
    ({"GET", "PUT"}, re.compile(rf"bundles/{_ID}/requesters")),  # who may request (#17)
    ({"GET"}, re.compile(r"keys")),
    ({"GET", "POST"}, re.compile(r"workload-policies")),
    ({"GET", "PATCH", "DELETE"}, re.compile(rf"workload-policies/{_ID}")),
    ({"GET"}, re.compile(r"members")),
)


def is_user_token_route(rest: str, query: Collection[str]) -> bool:
    """True for what a terminal signed in with `envcat login` may call (`rest` after /api/v1/)."""
    if "reveal" in query or USER_TOKEN_REFUSED.fullmatch(rest):
        return False
    return USER_TOKEN_ROUTES.fullmatch(rest) is not None


def is_admin_token_route(method: str, rest: str, query: Collection[str]) -> bool:
    """True for what an admin service token may call: bundles as code, within the above."""
    if not is_user_token_route(rest, query):
        return False
    return any(method in methods and path.fullmatch(rest) for methods, path in ADMIN_TOKEN_ROUTES)
