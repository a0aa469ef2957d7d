"""The internal Flask api: validates, reads/writes DB and Redis, enqueues tasks."""

from __future__ import annotations

import secrets

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from envcat.api import auth
from envcat.api.context import no_store
from envcat.api.errors import register_error_handlers
from envcat.api.extensions import limiter
from envcat.core import forwarding, redisconn, signing, tracing
from envcat.core.logging import request_id_var
from envcat.core.settings import Settings, load_settings
from envcat.core.wire import REQUEST_ID_HEADER, clean_request_id
from envcat.services.runtime import (
    MAX_REDIS_CONNECTIONS,
    REDIS_SOCKET_TIMEOUT,
    current,
    init_app,
)
from envcat.workers.factory import create_celery


def _blueprints() -> list[object]:
    from envcat.api.views import (
        approvals,
        audit,
        bundles,
        clerk_internal,
        connectors,
        grants,
        groups,
        health,
        inbox,
        internal,
        keys,
        logins,
        me,
        members,
        passkeys,
        requesters,
        requests,
        scanning,
        team,
        webhooks,
        workloads,
    )

    return [
        health.bp,
        requests.bp,
        approvals.bp,
        bundles.bp,
        keys.bp,
        connectors.bp,
        audit.bp,
        me.bp,
        internal.bp,
        clerk_internal.bp,
        webhooks.bp,
        members.bp,
        team.bp,
        workloads.bp,
        passkeys.bp,
        passkeys.public_bp,
        inbox.bp,
        scanning.bp,
        logins.bp,
        logins.signed_bp,
        groups.bp,
        grants.bp,
        requesters.bp,
    ]


def _bind_request_id() -> None:
    g.request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or secrets.token_hex(8)
    request_id_var.set(g.request_id)


def _echo_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
    return response


def _adopt_client_ip() -> None:
    """Take the client address the bff vouched for; otherwise keep the socket's (after ProxyFix).

    Registered before the rate limiter, which keys on `request.remote_addr`.
    """
    claimed = request.headers.get(forwarding.HEADER_CLIENT_IP)
    if claimed is None:
        return
    runtime = current()
    verified = forwarding.verified_client(
        runtime.settings.bff_shared_secret.get_secret_value(),
        claimed,
        request.headers.get(forwarding.HEADER_CLIENT_PROOF),
        request.method,
        request.path,
    )
    if verified is None:
        return
    ip, nonce = verified
    # Single use: a proof seen on the wire cannot be replayed to borrow the address. A
    # genuinely signed call's own nonce is spent in the same round trip (issue #22: one
    # Redis round trip fewer on every signed call from the bff); `verify_signature`
    # then reads the outcome instead of asking Redis again.
    proof_key, proof_ttl = forwarding.NONCE_KEY_PREFIX + nonce, forwarding.NONCE_TTL_SECONDS
    call_nonce = auth.genuine_nonce()
    if call_nonce is None:  # a relayed CLI call, unsigned: the proof's nonce alone
        proof_fresh = runtime.redis.set(proof_key, "1", nx=True, ex=proof_ttl)
    else:
        pipe = runtime.redis.pipeline(transaction=False)
        pipe.set(proof_key, "1", nx=True, ex=proof_ttl)
        pipe.set(auth.call_nonce_key(call_nonce), "1", nx=True, ex=signing.NONCE_TTL_SECONDS)
        proof_fresh, call_fresh = pipe.execute()
        auth.note_spent(call_nonce, bool(call_fresh))
    if proof_fresh:
        request.remote_addr = ip
        request.environ["REMOTE_ADDR"] = ip


def _unbind_request_id(_: BaseException | None) -> None:
    # Threaded servers reuse threads: the next request must not inherit this id.
    request_id_var.set(None)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the api from explicit settings (tests) or the environment (wsgi)."""
    settings = settings or load_settings()
    tracing.setup(settings, "api")  # before the database engine is made: it gets traced
    app = Flask("envcat.api")
    # X-Forwarded-For is trusted only for TRUSTED_PROXIES hops; the bff's client address
    # arrives with a proof instead (`_adopt_client_ip`).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    storage_uri, storage_options = redisconn.limiter_storage(settings)
    app.config["RATELIMIT_STORAGE_URI"] = storage_uri
    # redis-py's default pool refuses a 101st connection; a gevent worker needs more.
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {
        **storage_options,
        "max_connections": MAX_REDIS_CONNECTIONS,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
    }
    app.config["RATELIMIT_KEY_PREFIX"] = "ratelimit"
    init_app(app, settings)
    app.extensions["celery"] = create_celery(settings, app)
    app.before_request(_bind_request_id)
    app.before_request(_adopt_client_ip)  # before the limiter's own hook
    # The one Limiter merges each app's storage options into what earlier apps left: a
    # TLS or Sentinel app must not hand its options to the next (tests build many apps).
    limiter._storage_options = {}
    limiter.init_app(app)
    register_error_handlers(app)
    app.after_request(_echo_request_id)
    app.after_request(no_store)  # every reply: signed, internal, public and errors alike
    app.teardown_request(_unbind_request_id)
    for bp in _blueprints():
        app.register_blueprint(bp)  # type: ignore[arg-type]
    tracing.instrument_app(app)
    return app
