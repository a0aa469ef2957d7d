"""A writer to the bff's Redis and the session records there (issue #23, threat model).

Session records live in Redis under hashed ids; the signed cookie holds the id.
The threat model's Redis row says what a Redis *writer* can do with them: this
test edits the attacker's own record to name another user and checks that the
bff does not then act as that user: each record carries a MAC under a key derived
from the session secret, which Redis never holds, so the edited record reads as no
session at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from envcat.bff.sessions import USER_PREFIX
from tests.support.bff import module_stack, new_user
from tests.support.stack import LiveStack


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(redis_base_url, redis_dbs, tmp_path_factory) as shared:
        yield shared


def test_a_redis_writer_cannot_become_another_user_by_editing_its_session_record(
    stack: LiveStack,
) -> None:
    victim = new_user(stack, "victim")
    mallory = new_user(stack, "mallory")
    assert mallory.get("/api/v1/me").json()["user"]["id"] == mallory.user_id
    with redis.Redis.from_url(stack.settings.redis_url, decode_responses=True) as r:
        (record,) = r.smembers(USER_PREFIX + mallory.user_id)
        r.hset(
            record,
            mapping={
                "user": victim.user_id,
                "tenant": victim.tenant_id,
                "email": str(victim.account["user"]["email"]),
                "role": "owner",
            },
        )
    me = mallory.get("/api/v1/me")
    assert me.status_code == 401
    assert mallory.get("/bundles").status_code in (302, 303)  # signed out, not the victim
