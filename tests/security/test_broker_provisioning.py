"""A broker writer and Clerk provisioning messages (issue #23, threat model, broker row).

The api records each Svix-verified Clerk delivery by its id and enqueues the
event's data; the worker applies an id the api recorded, once. Whoever can write
to the broker can take a recorded message off the queue and put it back with other
data under the same id, keeping the MAC.
The message's data carries the api's MAC (services.integrity), so the worker
refuses the swapped data and still applies the genuine message once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from envcat.models import WebhookEvent, db
from envcat.services import integrity, provisioning
from envcat.services.runtime import create_service_app
from tests.support.clerk_events import apply, membership_data, new_id, role_of
from tests.support.databases import migrated
from tests.support.settings import make_settings


@pytest.fixture
def runtime(sqlite_url: str, redis_url: str, broker_url: str) -> Iterator[Flask]:
    migrated(sqlite_url)
    app = create_service_app(make_settings(sqlite_url, redis_url, broker_url))
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_a_broker_writer_cannot_swap_the_data_of_a_recorded_clerk_event(runtime: Flask) -> None:
    org, owner, attacker = new_id("org"), new_id("user"), new_id("user")
    apply("organizationMembership.created", membership_data(org, owner, "org:admin"))
    assert role_of(owner, org) == "admin"
    # the api records a genuine, Svix-verified delivery: another member joins
    genuine = new_id("msg")
    db.session.add(WebhookEvent(id=genuine, type="organizationMembership.created"))
    db.session.commit()
    member = new_id("user")
    data = membership_data(org, member, "org:member")
    mac = integrity.event_mac(genuine, "organizationMembership.created", data)
    # a broker writer replaces the queued message's data (keeping the api's MAC)
    forged = membership_data(org, attacker, "org:admin")
    assert not provisioning.apply_event(genuine, "organizationMembership.created", forged, mac)
    assert not provisioning.apply_event(genuine, "organizationMembership.created", forged, "x")
    assert role_of(attacker, org) is None
    # the genuine message still applies, once
    assert provisioning.apply_event(genuine, "organizationMembership.created", data, mac)
    assert role_of(member, org) == "member"
