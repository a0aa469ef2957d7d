"""The web UI of device grants (issue #17), over HTTP as a browser without JavaScript.

The bundle page turns grants on and lists them; the approval page shows the device's
fingerprint and the tick; revoking from the bundle page stops the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey

from envcat.cli.device import signed_block
from envcat.core.device import fingerprint
from envcat.core.sealing import encode_public_key, generate_keypair
from tests.support.bff import Browser, add_key, create_bundle, module_stack, new_user
from tests.support.stack import LiveStack


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(redis_base_url, redis_dbs, tmp_path_factory) as running:
        yield running


def _ask(stack: LiveStack, owner: Browser, device: SigningKey) -> dict[str, str]:
    body: dict[str, Any] = {
        "client_pubkey": encode_public_key(generate_keypair()),
        "workspace": owner.workspace,
        "bundle": "production/web",
    }
    body["device"] = signed_block(device, body)
    reply = httpx.post(f"{stack.bff_url}/api/v1/requests", json=body, timeout=30)
    assert reply.status_code == 201, reply.text
    data: dict[str, str] = reply.json()
    return data


def test_approve_with_a_grant_then_revoke_it_from_the_bundle_page(stack: LiveStack) -> None:
    owner = new_user(stack, "grants")
    bundle_id = create_bundle(owner, "production/web")
    add_key(owner, bundle_id, "SESSION_KEY", "canary-sess-4")
    device = SigningKey.generate()
    shown = fingerprint(bytes(device.verify_key))

    first = _ask(stack, owner, device)
    page = owner.get(f"/approve/{first['id']}").text
    assert shown in page and 'name="grant"' not in page  # grants are off by default
    saved = owner.post(f"/bundles/{bundle_id}/grant-policy", {"max_hours": "8"})
    assert saved.status_code == 302
    page = owner.get(f"/approve/{first['id']}").text
    assert 'name="grant"' in page and 'max="8"' in page
    approved = owner.post(
        f"/approve/{first['id']}",
        {"bundle_id": bundle_id, "include_keys": "SESSION_KEY", "grant": "yes", "grant_hours": "4"},
    )
    assert approved.status_code == 200, approved.text

    second = _ask(stack, owner, device)
    assert second.get("grant_id") and second["workload_mode"] == "automatic"
    bundle_page = owner.get(f"/bundles/{bundle_id}").text
    assert shown in bundle_page and "Revoke" in bundle_page
    revoked = owner.post(f"/bundles/{bundle_id}/grants/{second['grant_id']}/revoke")
    assert revoked.status_code == 302
    assert "Grant revoked." in owner.get(revoked.headers["Location"]).text
    third = _ask(stack, owner, device)
    assert "grant_id" not in third  # waits for a person again
