"""Signed endpoints: per-bundle approvers and notification settings (issue #17), and the
hooks that queue notices after a request is made or decided. Thin."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from envcat.api.auth import caller, signed_blueprint
from envcat.api.context import current_actor
from envcat.api.openapi import endpoint
from envcat.core.schemas.team import (
    ApproversOut,
    ApproversUpdate,
    NotificationSettingsOut,
    NotificationSettingsUpdate,
)
from envcat.models import db
from envcat.services import approvers, editors, notification_settings, notifications
from envcat.workers import notification_tasks
from envcat.workers.enqueue import BROKER_ERRORS

log = logging.getLogger("envcat.notifications")
bp = signed_blueprint("team")
_QUIET: tuple[type[BaseException], ...] = (SQLAlchemyError, RedisError, *BROKER_ERRORS)


@endpoint(
    bp,
    "/bundles/<bundle_id>/approvers",
    "GET",
    summary="Who may approve this bundle (and whether the caller may)",
    auth="signed",
    responses={200: ApproversOut},
)
def get_approvers(bundle_id: str) -> ApproversOut:
    """Any member."""
    who = caller()
    return approvers.describe(who.tenant_id, bundle_id, who.user_id)


@endpoint(
    bp,
    "/bundles/<bundle_id>/approvers",
    "PUT",
    summary="Set who may approve this bundle: a minimum role and/or named members",
    auth="signed",
    body=ApproversUpdate,
    responses={200: ApproversOut},
    errors=(400, 403),
)
def set_approvers(bundle_id: str, body: ApproversUpdate) -> ApproversOut:
    """Admin+ who may edit the bundle (issue #17)."""
    who = caller()
    who.require("admin")
    editors.require_editor(who.tenant_id, who.user_id, who.role, bundle_id)
    return approvers.set_rule(current_actor(), bundle_id, body)


@endpoint(
    bp,
    "/notifications",
    "GET",
    summary="The workspace's notification settings (webhook origin, email on/off)",
    auth="signed",
    responses={200: NotificationSettingsOut},
    errors=(403,),
)
def get_notifications() -> NotificationSettingsOut:
    """Admin+."""
    caller().require("admin")
    return notification_settings.show(caller().tenant_id)


@endpoint(
    bp,
    "/notifications",
    "PUT",
    summary="Set the webhook URL (https; its signing secret is shown once) and email on/off",
    auth="signed",
    body=NotificationSettingsUpdate,
    responses={200: NotificationSettingsOut},
    errors=(400, 403),
)
def put_notifications(body: NotificationSettingsUpdate) -> NotificationSettingsOut:
    """Admin+."""
    caller().require("admin")
    return notification_settings.update(current_actor(), body)


def notify_new_request(request_id: str, client_ip: str) -> None:
    """Queue the approvers' notice of a new request, if admitted; never fails the request."""
    try:
        if notifications.admit_request(request_id, client_ip):
            notification_tasks.notify_request.apply_async((request_id,))
    except _QUIET:
        db.session.rollback()
        log.warning("request notice not queued", extra={"id": request_id}, exc_info=True)


def notify_decision(
    tenant_id: str, request_id: str, action: str, wanted: bool | None = None
) -> None:
    """Queue the notice of a decision; never fails the decision.

    `wanted` is whether the workspace has a channel, when the decision read it inside
    its own unit (an approval does: envcat.services.decision_rules); read here otherwise.
    """
    try:
        if notifications.has_channel(tenant_id) if wanted is None else wanted:
            notification_tasks.notify_decision.apply_async((tenant_id, request_id, action))
    except _QUIET:
        db.session.rollback()
        log.warning("decision notice not queued", extra={"id": request_id}, exc_info=True)
