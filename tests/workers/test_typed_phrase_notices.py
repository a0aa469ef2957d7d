"""Where approvers must type the verification phrase, a request's notice does not carry it
(an emailed phrase next to the link would be read off instead of asked for). Real Redis,
real SMTP (aiosmtpd); the notice task's body run as the worker runs it."""

from __future__ import annotations

from envcat.models import WorkspacePolicy, db
from envcat.services import notifications
from envcat.services.access_requests import store
from envcat.services.runtime import current
from tests.support.api import SeedKey, seed_bundle
from tests.support.inboxes import SmtpInbox
from tests.support.signed import add_member
from tests.workers.test_notification_tasks import TENANT, _app, _pending_request, inbox

__all__ = ["inbox"]  # the fixture, imported for pytest


def test_a_request_notice_leaves_the_phrase_out_where_approvers_type_it(
    sqlite_url: str, redis_url: str, broker_url: str, inbox: SmtpInbox
) -> None:
    _, app = _app(sqlite_url, redis_url, broker_url, inbox.port)
    with app.app_context():
        add_member("u-ada", TENANT, "owner", email="ada@example.test", kind="org")
        seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", "v")])
        db.session.add(WorkspacePolicy(tenant_id=TENANT, require_phrase=True))
        db.session.commit()
        request_id = _pending_request(app)
        request = store.get(current().redis, request_id)
        assert request is not None
        phrase = request.user_code
        assert notifications.admit_request(request_id, "192.0.2.10")
        notifications.notify_request(request_id)
    message = inbox.wait_for(lambda m: m["To"] == "ada@example.test")
    text = message.get_content()
    assert "production/api" in message["Subject"] and f"/approve/{request_id}" in text
    assert "Verification phrase: not shown" in text and "Ask the requester" in text
    for form in (phrase, phrase.replace("-", "")):
        assert form not in message["Subject"] and form not in text
