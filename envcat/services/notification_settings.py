"""A workspace's notification settings (issue #17): webhook URL and secret, email on/off.

The URL (Slack's incoming-webhook URLs are bearer secrets) and the HMAC secret
are stored encrypted with BUNDLE_KMS_KEY; the secret is shown once, when made.
Afterwards only the URL's scheme and host are shown, and audited.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from envcat.core.schemas.team import NotificationSettingsOut, NotificationSettingsUpdate
from envcat.models import NotificationTarget, db
from envcat.services import outbound
from envcat.services.runtime import current
from envcat.services.tenancy import Actor, transaction

SECRET_PREFIX = "whsec_"  # noqa: S105  # a prefix, not a secret


def _shown(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def _url_of(target: NotificationTarget | None) -> str | None:
    if target is None or not target.webhook_url:
        return None
    return current().keyring.decrypt(
        target.webhook_url, tenant_id=target.tenant_id, key_id="webhook-url"
    )


def show(tenant_id: str) -> NotificationSettingsOut:
    """The settings as admins see them (the URL shortened to its origin, never the secret)."""
    target = db.session.get(NotificationTarget, tenant_id)
    return NotificationSettingsOut(
        webhook_url=_shown(_url_of(target)),
        email_enabled=target.email_enabled if target is not None else True,
        email_configured=bool(current().settings.smtp_host),
    )


def update(actor: Actor, body: NotificationSettingsUpdate) -> NotificationSettingsOut:
    """Save the settings (admin+, checked by the view); a new URL or `rotate_secret` makes a
    new secret, returned here once. Audited with the URL's origin only."""
    runtime = current()
    url = (
        outbound.check_webhook_url(body.webhook_url, runtime.settings)
        if body.webhook_url is not None
        else None
    )
    keyring = runtime.keyring
    new_secret: str | None = None
    with transaction():
        target = db.session.get(NotificationTarget, actor.tenant_id)
        if target is None:
            target = NotificationTarget(tenant_id=actor.tenant_id)
            db.session.add(target)
        previous = _url_of(target)
        target.email_enabled = body.email_enabled
        if url is None:
            target.webhook_url = target.webhook_secret = None
        elif url != previous or body.rotate_secret or not target.webhook_secret:
            new_secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            target.webhook_url = keyring.encrypt(
                url, tenant_id=actor.tenant_id, key_id="webhook-url"
            )
            target.webhook_secret = keyring.encrypt(
                new_secret, tenant_id=actor.tenant_id, key_id="webhook-secret"
            )
    actor.record(
        "notifications.changed",
        actor.tenant_id,
        details={
            "webhook": _shown(url),
            "email_enabled": body.email_enabled,
            "secret_rotated": new_secret is not None,
        },
    )
    out = show(actor.tenant_id)
    out.webhook_secret = new_secret
    return out
