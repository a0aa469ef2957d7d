"""A workspace's notification settings (issue #17): webhook URL and secret, email on/off.

The URL (Slack's incoming-webhook URLs are bearer secrets) and the HMAC secret
are stored encrypted with BUNDLE_KMS_KEY; the secret is shown once, when made.
Afterwards only the URL's scheme and host are shown, and audited.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, cast
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import ColumnElement, CursorResult, func, or_, select

from envcat.core.kms import VERSION, DecryptionError
from envcat.core.schemas.team import NotificationSettingsOut, NotificationSettingsUpdate
from envcat.models import NotificationTarget, db
from envcat.services import outbound
from envcat.services.runtime import current
from envcat.services.tenancy import Actor
from envcat.services.transactions import transaction

SECRET_PREFIX = "whsec_"  # noqa: S105  # a prefix, not a secret
log = logging.getLogger("envcat.notifications")


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
        actor.append(
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


# ---- KMS rotation (envcat server rotate-kms) ----------------------------------------------


def _outdated() -> ColumnElement[bool]:
    prefix = f"{VERSION}.{current().keyring.primary_id}."
    url, secret = NotificationTarget.webhook_url, NotificationTarget.webhook_secret
    return or_(
        url.is_not(None) & ~url.startswith(prefix, autoescape=True),
        secret.is_not(None) & ~secret.startswith(prefix, autoescape=True),
    )


def count_outdated() -> int:
    """Workspaces whose webhook URL or secret is not under the primary keyring key."""
    query = select(func.count()).select_from(NotificationTarget).where(_outdated())
    return int(db.session.execute(query).scalar_one())


def rotate(budget: int) -> int:
    """Re-encrypt up to `budget` workspaces' webhook URL and secret under the primary key.

    Conditional UPDATEs in the caller's transaction: a target saved meanwhile is left
    as its writer saved it (already under the primary key). Undecryptable rows are
    skipped and logged, so the rotation of the others goes on.
    """
    keyring = current().keyring
    rows = db.session.execute(
        select(
            NotificationTarget.tenant_id,
            NotificationTarget.webhook_url,
            NotificationTarget.webhook_secret,
        )
        .where(_outdated())
        .order_by(NotificationTarget.tenant_id)
        .limit(budget)
    ).all()
    done = 0
    for tenant_id, url, secret in rows:
        if url is None or secret is None:  # saved and cleared together; never half set
            continue
        try:
            fresh_url = keyring.reencrypt(url, tenant_id=tenant_id, key_id="webhook-url")
            fresh_secret = keyring.reencrypt(secret, tenant_id=tenant_id, key_id="webhook-secret")
        except DecryptionError:
            log.error(
                "webhook settings do not decrypt; left as they are", extra={"tenant_id": tenant_id}
            )
            continue
        changed = db.session.execute(
            sa.update(NotificationTarget)
            .where(
                NotificationTarget.tenant_id == tenant_id,
                NotificationTarget.webhook_url == url,
                NotificationTarget.webhook_secret == secret,
            )
            .values(webhook_url=fresh_url, webhook_secret=fresh_secret)
            .execution_options(synchronize_session=False)
        )
        done += int(cast(CursorResult[Any], changed).rowcount)
    return done
