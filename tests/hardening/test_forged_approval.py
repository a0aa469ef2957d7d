"""Issue #12, finding 1, replayed with real processes: a writer to Redis and the broker.

The real `envcat get` waits through the bff for a request to its workspace. An
attacker with write access to Redis and to the broker (but not the api's
keyring) records an approval of their choosing in `req:<id>`, rewrites the CLI
key to their own, and enqueues `encrypt_from_bundle` with a made-up MAC, then
with the MAC of a genuine approval of another request. The worker process
refuses every time before reading a key: the request fails, the workspace's
audit log says why, and no ciphertext is ever stored; the CLI prints nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.services.access_requests import delivery, store
from envcat.services.runtime import create_service_app
from envcat.workers.factory import create_celery
from tests.hardening.flows import CliRun, sign_up_owner
from tests.hardening.processes import ProcessStack, cli_environment
from tests.support.requests import record_approval, stored_request

TASK = "envcat.encrypt_from_bundle"
VALUES = {"FORGE_TARGET": "value-the-attacker-wants"}


@pytest.mark.slow
def test_a_forged_record_and_task_deliver_nothing(
    process_stack: ProcessStack, tmp_path: Path
) -> None:
    owner = sign_up_owner(process_stack.api_url, process_stack.secret)
    bundle_id = owner.create_bundle("forge/target", VALUES)
    app_redis = redis.Redis.from_url(process_stack.settings.redis_url, decode_responses=True)
    env = cli_environment(tmp_path, owner.workspace)
    cli = CliRun.start(process_stack.bff_url, "--timeout", "60", env=env)
    try:
        request_id = cli.request_id()
        attacker = generate_keypair()
        forged = store.Approval(owner.tenant_id, owner.user_id, bundle_id, ("FORGE_TARGET",), 1.0)
        app_redis.hset(
            store.request_key(request_id),
            mapping={"a": forged.to_json(), "am": "A" * 22, "pub": encode_public_key(attacker)},
        )
        # A genuine MAC, but for another request: replaying it here proves nothing either.
        with create_service_app(process_stack.settings).app_context():
            other, _ = stored_request(app_redis, tenant_id=owner.tenant_id)
            genuine = record_approval(app_redis, other, owner.user_id, bundle_id, ["FORGE_TARGET"])
        celery = create_celery(process_stack.settings)
        celery.send_task(TASK, args=[request_id, "A" * 22])
        celery.send_task(TASK, args=[request_id, genuine])

        code, values, stderr = cli.finish(timeout=60)
        assert (code, values) == (1, None), stderr
        assert delivery.TAMPERED in stderr
        assert "value-the-attacker-wants" not in stderr
        time.sleep(1.0)  # the second message has run too
        events = owner.client.get("/api/v1/audit").json()["events"]
        refused = [e for e in events if e["target"] == request_id]
        assert [e["action"] for e in refused] == ["request.integrity_failed"]
        assert store.get(app_redis, request_id) is None  # failed, taken by the CLI, gone
    finally:
        cli.stop()
        owner.client.close()
        app_redis.close()
