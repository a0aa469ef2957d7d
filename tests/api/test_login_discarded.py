"""A sign-in nobody can receive leaves no token behind (issue #16).

The terminal cancels its login request (or it is decided elsewhere) in the moment
between the approver's check and the sealed token's hand-over. The token minted for
it must be deleted again in the same breath, audited `user_token.discarded`, and
never authenticate: otherwise a live credential would exist that nobody holds and no
page shows as anyone's terminal.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.models import UserToken, db
from envcat.services import user_tokens
from envcat.services.access_requests import store
from tests.support.api import audit_actions, ensure_workspace

TENANT = "t-acme"


def test_a_sign_in_whose_terminal_cancelled_meanwhile_deletes_its_token(
    api_client: Any, signed_as: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_workspace(TENANT)
    approver = signed_as("u-alice", TENANT, "member")
    body = {"client_pubkey": encode_public_key(generate_keypair()), "workspace": TENANT}
    created = api_client.post("/api/v1/logins", json=body)
    assert created.status_code == 201, created.get_json()
    login = created.get_json()
    minted: list[str] = []
    issue = user_tokens.issue

    def issue_then_terminal_cancels(tenant_id: str, user_id: str, name: str) -> Any:
        token, row = issue(tenant_id, user_id, name)
        minted.append(token)
        # the CLI gives up (Ctrl-C) while its token is being minted: only Redis changes
        cancelled = store.cancel_request(redis_client, login["id"], login["poll_token"])
        assert cancelled.outcome == "cancelled"
        return token, row

    monkeypatch.setattr(user_tokens, "issue", issue_then_terminal_cancels)
    answer = approver.post(f"/api/v1/requests/{login['id']}/sign-in")

    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json()["error"] == "conflict"
    assert db.session.execute(select(func.count()).select_from(UserToken)).scalar() == 0
    assert audit_actions(TENANT)[-2:] == [
        ("user_token.created", login["id"]),
        ("user_token.discarded", login["id"]),
    ]
    (token,) = minted
    whoami = api_client.get("/api/v1/logins/whoami", headers={"Authorization": f"Bearer {token}"})
    assert whoami.status_code == 401, whoami.get_json()
