"""Notification settings (issue #17): webhook URLs are validated and SSRF-checked, the
signing secret is shown once and stored encrypted, and admins alone may change them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from envcat.models import db
from envcat.services import outbound
from envcat.services.errors import ValidationFailed
from tests.support.api import audit_actions
from tests.support.settings import make_settings

TENANT = "t-acme"
SLACK_URL = "https://hooks.slack.example/services/T000/B000/secretpathtoken"


def _put(signed: Any, body: dict[str, Any]) -> Any:
    return signed.call("PUT", "/api/v1/notifications", body)


def test_the_secret_is_shown_once_and_url_and_secret_are_stored_encrypted(
    signed_as: Any,
) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    saved = _put(admin, {"webhook_url": SLACK_URL})
    assert saved.status_code == 200, saved.get_json()
    secret = saved.get_json()["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert saved.get_json()["webhook_url"] == "https://hooks.slack.example/…"
    shown = admin.get("/api/v1/notifications").get_json()
    assert shown["webhook_secret"] is None and "secretpathtoken" not in str(shown)
    rows = str(db.session.execute(text("SELECT * FROM notification_targets")).all())
    assert secret not in rows and "secretpathtoken" not in rows
    audit = str(db.session.execute(text("SELECT details FROM audit_events")).all())
    assert "secretpathtoken" not in audit and secret not in audit
    assert ("notifications.changed", TENANT) in audit_actions(TENANT)
    # saving the same URL again keeps the secret; asking rotates it
    assert _put(admin, {"webhook_url": SLACK_URL}).get_json()["webhook_secret"] is None
    rotated = _put(admin, {"webhook_url": SLACK_URL, "rotate_secret": True}).get_json()
    assert rotated["webhook_secret"] not in (None, secret)
    cleared = _put(admin, {"webhook_url": None}).get_json()
    assert cleared["webhook_url"] is None


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # plain http off loopback
        "http://127.0.0.1:9/x",  # loopback http without the setting
        "https://127.0.0.1/x",  # loopback
        "https://10.0.0.5/x",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]/x",
        "https://[::ffff:10.0.0.1]/x",  # IPv4-mapped private
        "https://user:pass@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https:///nohost",
        "https://hooks.example.com:99999/x",
    ],
)
def test_unsafe_webhook_urls_are_refused_at_write_time(signed_as: Any, url: str) -> None:
    admin = signed_as("u-admin", TENANT, "admin")
    reply = _put(admin, {"webhook_url": url})
    assert (reply.status_code, reply.get_json()["error"]) == (400, "validation_error"), url
    assert admin.get("/api/v1/notifications").get_json()["webhook_url"] is None


def test_members_cannot_read_or_change_notification_settings(signed_as: Any) -> None:
    signed_as("u-owner", TENANT, "owner")
    member = signed_as("u-mem", TENANT, "member")
    assert member.get("/api/v1/notifications").status_code == 403
    assert _put(member, {"webhook_url": SLACK_URL}).status_code == 403


def test_a_hostname_resolving_to_a_private_address_is_refused_before_sending(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    strict = make_settings(sqlite_url, redis_url, broker_url)
    # `localhost` passes the write-time check (a name, not an address) but resolves to
    # loopback: the delivery-time resolution refuses it (DNS rebinding is the same case).
    with pytest.raises(outbound.UnsafeDestination):
        outbound.resolve_destination("https://localhost/x", strict)
    loose = make_settings(sqlite_url, redis_url, broker_url, webhook_allow_private=True)
    outbound.resolve_destination("https://localhost/x", loose)  # allowed when configured
    with pytest.raises(outbound.UnsafeDestination):
        outbound.post_webhook("https://localhost:9/x", "s", b"{}", strict)


def test_http_is_accepted_only_for_loopback_and_only_with_the_setting(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    settings = make_settings(
        sqlite_url,
        redis_url,
        broker_url,
        webhook_allow_http_loopback=True,
        webhook_allow_private=True,
    )
    assert outbound.check_webhook_url("http://127.0.0.1:8080/h", settings)
    assert outbound.check_webhook_url("http://localhost:8080/h", settings)
    with pytest.raises(ValidationFailed):
        outbound.check_webhook_url("http://hooks.example.com/h", settings)


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    import hashlib
    import hmac

    body = b'{"text":"hi"}'
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert outbound.signature("whsec_x", "1700000000", body) == f"v1={expected}"
    assert outbound.signature("whsec_x", "1700000001", body) != f"v1={expected}"
