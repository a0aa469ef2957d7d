"""The workload trust policy page and the approval page of a workload's request (issue #16).

Through the real bff and api (live stack), as a browser without JavaScript would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
import redis

from envcat.bff.views.workloads import parse_rules
from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.api import redis_dump
from tests.support.bff import Browser, module_stack, new_user
from tests.support.stack import LiveStack
from tests.workloads.issuer import AUDIENCE, LoopbackIssuer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url, redis_dbs, tmp_path_factory, oidc_allow_http=True, oidc_jwks_cooldown=0
    ) as shared:
        yield shared


@pytest.fixture
def issuer() -> Iterator[LoopbackIssuer]:
    running = LoopbackIssuer().start()
    yield running
    running.stop()


def _bundle(ada: Browser) -> str:
    ada.post("/bundles", {"name": "production/api"})
    bundles = ada.get("/api/v1/bundles").json()["bundles"]
    bundle_id = str(next(b["id"] for b in bundles if b["name"] == "production/api"))
    ada.post(f"/bundles/{bundle_id}/keys", {"name": "DATABASE_URL", "value": "canary-pg-8d2"})
    return bundle_id


def _create(
    ada: Browser, issuer_url: str, bundle_id: str, mode: str = "approval"
) -> httpx.Response:
    return ada.post(
        "/workloads",
        {
            "name": "deploy from main",
            "issuer": issuer_url,
            "audience": AUDIENCE,
            "rules": "repository eq acme/api\nref glob refs/heads/*\n",
            "bundle_id": bundle_id,
            "keys": "",
            "mode": mode,
        },
    )


def test_rules_are_one_per_line() -> None:
    assert parse_rules("repository eq acme/api\n\nref glob refs/heads/*") == [
        {"claim": "repository", "op": "eq", "value": "acme/api"},
        {"claim": "ref", "op": "glob", "value": "refs/heads/*"},
    ]
    assert parse_rules("repository == acme/api") is None
    assert parse_rules("ref glob") is None


def test_an_owner_creates_lists_and_deletes_a_policy(stack: LiveStack) -> None:
    ada = new_user(stack, "ada")
    bundle_id = _bundle(ada)
    created = _create(ada, "https://token.actions.githubusercontent.com", bundle_id)
    assert created.status_code == 302
    page = ada.get("/workloads")
    assert page.status_code == 200
    assert "deploy from main" in page.text and "refs/heads/*" in page.text
    assert "canary-pg-8d2" not in page.text
    [policy] = ada.get("/api/v1/workload-policies").json()["items"]
    deleted = ada.post(f"/workloads/{policy['id']}/delete")
    assert deleted.status_code == 302
    assert ada.get("/api/v1/workload-policies").json()["items"] == []
    assert "No trust policies yet" in ada.get("/workloads").text


def test_a_bad_rule_or_issuer_is_explained_and_nothing_is_created(stack: LiveStack) -> None:
    ada = new_user(stack, "grace")
    bundle_id = _bundle(ada)
    bad_rules = ada.post(
        "/workloads",
        {
            "name": "x",
            "issuer": "https://i.test",
            "audience": "a",
            "rules": "repo is x",
            "bundle_id": bundle_id,
        },
        follow_redirects=True,
    )
    assert "one rule per line" in bad_rules.text
    plain_http = _create(ada, "http://issuer.example.test", bundle_id)
    assert plain_http.status_code == 302
    assert "https" in ada.get("/workloads").text
    assert ada.get("/api/v1/workload-policies").json()["items"] == []


def test_the_approval_page_names_the_workload(stack: LiveStack, issuer: LoopbackIssuer) -> None:
    ada = new_user(stack, "linus")
    bundle_id = _bundle(ada)
    assert _create(ada, issuer.url, bundle_id, mode="approval").status_code == 302
    with httpx.Client(base_url=stack.bff_url, timeout=30) as cli:
        created = cli.post(
            "/api/v1/requests",
            json={
                "client_pubkey": encode_public_key(generate_keypair()),
                "workspace": ada.workspace,
                "id_token": issuer.mint(),
            },
        )
    assert created.status_code == 201, created.text
    assert created.json()["workload_mode"] == "approval"
    page = ada.get(f"/approve/{created.json()['id']}")
    assert page.status_code == 200
    assert "workload:github:acme/api@refs/heads/main run 123" in page.text
    assert "policy deploy from main" in page.text


def test_a_service_token_is_shown_once_and_kept_nowhere_by_the_bff(stack: LiveStack) -> None:
    ada = new_user(stack, "margaret")
    bundle_id = _bundle(ada)
    made = ada.post(
        "/workloads/tokens",
        {"name": "jenkins", "bundle_id": bundle_id, "keys": "DATABASE_URL", "expires_in_days": "7"},
    )
    assert made.status_code == 201
    assert made.headers["Cache-Control"] == "no-store"
    token = re.search(r'value="(ect_[^"]+)"', made.text)
    assert token is not None
    listing = ada.get("/workloads").text
    assert token.group(1) not in listing and "jenkins" in listing
    with redis.Redis.from_url(stack.settings.redis_url, decode_responses=True) as client:
        assert token.group(1) not in redis_dump(client)  # not in a session record or flash
    [listed] = ada.get("/api/v1/service-tokens").json()["items"]
    assert ada.post(f"/workloads/tokens/{listed['id']}/revoke").status_code == 302
    assert ada.get("/api/v1/service-tokens").json()["items"][0]["revoked_at"] is not None


def test_the_bff_forwards_a_service_token_on_request_creation_only(stack: LiveStack) -> None:
    ada = new_user(stack, "ken")
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": ada.workspace}
    with httpx.Client(base_url=stack.bff_url, timeout=30) as cli:
        other_bearer = cli.post(
            "/api/v1/requests", json=body, headers={"Authorization": "Bearer not-a-service-token"}
        )
        forged = cli.post(
            "/api/v1/requests", json=body, headers={"Authorization": "Bearer ect_forged"}
        )
    assert other_bearer.status_code == 201  # not forwarded: an ordinary request
    assert "workload_mode" not in other_bearer.json()
    assert forged.status_code == 401  # forwarded, and refused by the api
    assert forged.json()["error"] == "invalid_service_token"


def test_the_forms_grant_scan_to_a_policy_and_make_an_admin_token(stack: LiveStack) -> None:
    ada = new_user(stack, "grace")
    bundle_id = _bundle(ada)
    form = {
        "name": "scan from ci",
        "issuer": "https://token.actions.githubusercontent.com",
        "audience": AUDIENCE,
        "rules": "repository eq acme/api\n",
        "bundle_id": bundle_id,
        "mode": "approval",
        "scan": "on",
    }
    assert ada.post("/workloads", form).status_code == 302
    [policy] = ada.get("/api/v1/workload-policies").json()["items"]
    assert policy["scan"] is True and "may scan" in ada.get("/workloads").text
    made = ada.post(
        "/workloads/tokens",
        {"name": "apply", "scopes": "admin", "bundle_id": bundle_id, "expires_in_days": "7"},
    )
    assert made.status_code == 201
    [token] = ada.get("/api/v1/service-tokens").json()["items"]
    assert (token["scopes"], token["bundle_id"]) == (["admin"], None)
    assert "no values" in ada.get("/workloads").text
