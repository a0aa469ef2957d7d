"""A busy api (issue #22) through the real bff: the approval page says so and keeps the choice.

The api samples a queue that no worker consumes, filled with real messages on the
real broker, as a stand-in for approvals piling up behind workers that cannot keep
up (the live stack's own worker drains the approvals queue at once).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Queue

from envcat.api.backpressure import EXTENSION
from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.workers.backlog import Backlog
from tests.support.bff import Browser, add_key, create_bundle, module_stack, new_user
from tests.support.stack import LiveStack

pytestmark = pytest.mark.slow

LIMIT = 3


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url, redis_dbs, tmp_path_factory, approval_backlog_limit=LIMIT
    ) as shared:
        yield shared


@pytest.fixture
def held_backlog(stack: LiveStack) -> Iterator[Backlog]:
    """LIMIT messages waiting in a queue no worker drains, and a sampler of that queue."""
    celery = stack.api_app.extensions["celery"]
    held = Queue("held-approvals")
    with celery.connection_for_write() as connection:
        producer = connection.Producer()
        for number in range(LIMIT):
            producer.publish({"n": number}, routing_key=held.name, declare=[held])
    yield Backlog(celery, queue=held.name)
    with celery.connection_for_write() as connection:
        held.bind(connection).purge()
    stack.api_app.extensions.pop(EXTENSION, None)


def test_a_busy_api_keeps_the_request_pending_and_says_when_to_retry(
    stack: LiveStack, held_backlog: Backlog
) -> None:
    ada: Browser = new_user(stack, "busy")
    bundle_id = create_bundle(ada, "prod/busy")
    add_key(ada, bundle_id, "TOKEN")
    created = stack.browser().post(
        "/api/v1/requests",
        json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": ada.workspace},
    )
    assert created.status_code == 201
    request_id = created.json()["id"]
    stack.api_app.extensions[EXTENSION] = held_backlog  # from now on, the api watches it

    page = ada.post(f"/approve/{request_id}", {"bundle_id": bundle_id, "include_keys": ["TOKEN"]})
    assert page.status_code == 503
    assert "EnvCat is busy" in page.text and "Try again in 5 seconds" in page.text
    assert 'name="include_keys" value="TOKEN" checked' in page.text  # the choice is kept
    # The CLI's create through the bff gets the api's own answer, not a generic 503.
    again = stack.browser().post(
        "/api/v1/requests",
        json={"client_pubkey": encode_public_key(generate_keypair()), "workspace": ada.workspace},
    )
    assert again.status_code == 503
    assert again.json()["error"] == "busy" and again.headers["Retry-After"] == "5"

    stack.api_app.extensions.pop(EXTENSION)  # the workers caught up
    done = ada.post(f"/approve/{request_id}", {"bundle_id": bundle_id, "include_keys": ["TOKEN"]})
    assert done.status_code == 200
    assert "on their way" in done.text
