"""`rotate-kms` re-encrypts webhook URLs and secrets too (issue #17), on both databases."""

from __future__ import annotations

from flask import Flask

from envcat.core.kms import Keyring
from envcat.core.schemas.team import NotificationSettingsUpdate
from envcat.models import NotificationTarget, Tenant, db
from envcat.services import notification_settings, rotation
from envcat.services.tenancy import Actor
from tests.support.rotation import NEW

URL = "https://hooks.example.com/services/T1/B2/secret-path"


def test_webhook_url_and_secret_move_to_the_new_primary_key(apps: tuple[Flask, Flask]) -> None:
    old, new = apps
    with old.app_context():
        db.session.add(Tenant(id="t-a", name="t-a", kind="org"))
        db.session.commit()
        body = NotificationSettingsUpdate(webhook_url=URL)
        secret = notification_settings.update(Actor("t-a", "u-admin"), body).webhook_secret
    with new.app_context():
        assert notification_settings.count_outdated() == 1
        assert rotation.count_outdated() == 1
        assert rotation.rotate_batch(10) == 1
        assert rotation.count_outdated() == 0
        assert rotation.rotate_batch(10) == 0  # a re-run finds nothing left
        row = db.session.get(NotificationTarget, "t-a")
        assert row is not None and row.webhook_url and row.webhook_secret
        only_new = Keyring.from_setting(NEW)  # the old key may now be dropped
        assert only_new.decrypt(row.webhook_url, tenant_id="t-a", key_id="webhook-url") == URL
        stored = only_new.decrypt(row.webhook_secret, tenant_id="t-a", key_id="webhook-secret")
        assert stored == secret
