"""Notification tasks (issue #17): ids only on the broker, once per channel, retried with
backoff while the mail server is away. Real Redis, real SMTP (aiosmtpd), real worker."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.smtp import AuthResult
from celery.contrib.testing.worker import start_worker
from celery.signals import task_retry
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from envcat.core.sealing import encode_public_key, generate_keypair
from envcat.core.settings import Settings
from envcat.services import notifications, outbound
from envcat.services.runtime import create_service_app
from envcat.workers import notification_tasks
from envcat.workers.factory import QUEUES, TASK_ROUTES, create_celery
from tests.support import free_port
from tests.support.api import SeedKey, seed_bundle
from tests.support.databases import migrated
from tests.support.inboxes import SmtpInbox, smtp_inbox
from tests.support.settings import make_settings
from tests.support.signed import add_member

CANARY = "canary-notify-91b2"
TENANT = "t-acme"


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    with smtp_inbox() as server:
        yield server


def _app(sqlite_url: str, redis_url: str, broker_url: str, port: int) -> tuple[Settings, Flask]:
    settings = make_settings(
        sqlite_url, redis_url, broker_url, smtp_host="127.0.0.1", smtp_port=port
    )
    migrated(settings.database_url)
    return settings, create_service_app(settings)


def _pending_request(app: Flask) -> str:
    """A real pending request for production/api, made through the api's create path."""
    from envcat.core.schemas.requests import AccessRequestCreate
    from envcat.services.access_requests import lifecycle

    body = AccessRequestCreate.model_validate(
        {
            "client_pubkey": encode_public_key(generate_keypair()),
            "workspace": TENANT,
            "bundle": "production/api",
            "context": {"hostname": "ci-runner"},
        }
    )
    return lifecycle.create(body, "192.0.2.10").id


def test_a_notice_runs_twice_and_sends_once_without_a_value(
    sqlite_url: str, redis_url: str, broker_url: str, inbox: SmtpInbox
) -> None:
    _, app = _app(sqlite_url, redis_url, broker_url, inbox.port)
    with app.app_context():
        add_member("u-ada", TENANT, "owner", email="ada@example.test", kind="org")
        seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", CANARY)])
        request_id = _pending_request(app)
        assert notifications.admit_request(request_id, "192.0.2.10")
        notifications.notify_request(request_id)
        notifications.notify_request(request_id)  # a redelivered message
    message = inbox.wait_for(lambda m: m["To"] == "ada@example.test")
    assert "production/api" in message["Subject"] and "ci-runner" in message.get_content()
    assert len(inbox.messages) == 1
    assert all(CANARY.encode() not in raw for raw in inbox.raw)


def test_the_broker_carries_ids_only(
    sqlite_url: str, redis_url: str, broker_url: str, inbox: SmtpInbox
) -> None:
    settings, app = _app(sqlite_url, redis_url, broker_url, inbox.port)
    create_celery(settings, app)
    for name in ("envcat.notify_request", "envcat.notify_decision", "envcat.send_invite"):
        assert TASK_ROUTES[name] == {"queue": "notifications"}
    assert "notifications" in QUEUES
    with app.app_context():
        add_member("u-ada", TENANT, "owner", email="ada@example.test", kind="org")
        seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", CANARY)])
        request_id = _pending_request(app)
        notification_tasks.notify_request.apply_async((request_id,))
    broker = redis.Redis.from_url(broker_url)
    queued = [json.loads(raw) for raw in broker.lrange("notifications", 0, -1)]
    broker.delete("notifications")
    broker.close()
    (message,) = [m for m in queued if m["headers"]["task"] == "envcat.notify_request"]
    assert message["headers"]["argsrepr"] == repr((request_id,))
    assert CANARY not in json.dumps(queued)


def test_a_mail_server_that_is_down_is_retried_until_it_answers(
    sqlite_url: str, redis_url: str, broker_url: str
) -> None:
    port = free_port()  # nothing listens here yet
    settings, app = _app(sqlite_url, redis_url, broker_url, port)
    celery = create_celery(settings, app)
    retried = threading.Event()

    def on_retry(**_: Any) -> None:
        retried.set()

    task_retry.connect(on_retry, weak=False)
    try:
        with app.app_context():
            add_member("u-ada", TENANT, "owner", email="ada@example.test", kind="org")
            seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", CANARY)])
            request_id = _pending_request(app)
            with start_worker(celery, pool="solo", queues=list(QUEUES), perform_ping_check=False):
                notification_tasks.notify_request.apply_async((request_id,))
                assert retried.wait(20), "the refused connection was not retried"
                with smtp_inbox(port) as inbox:  # the mail server comes back
                    inbox.wait_for(lambda m: m["To"] == "ada@example.test", seconds=40)
                    assert len(inbox.messages) == 1
    finally:
        task_retry.disconnect(on_retry)


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EnvCat test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_starttls_comes_before_the_login_and_the_mail(
    sqlite_url: str,
    redis_url: str,
    broker_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(str(cert), str(key))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the client trusts the test CA only
    logins: list[tuple[bytes, bytes, bool]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password, session.ssl is not None))
        return AuthResult(success=data.password == b"mail-password-canary")

    options: dict[str, Any] = {
        "tls_context": server_tls,
        "require_starttls": True,
        "auth_required": True,
        "authenticator": authenticator,
    }
    with smtp_inbox(**options) as inbox:
        smtp = {
            "smtp_host": "127.0.0.1",
            "smtp_port": inbox.port,
            "smtp_starttls": True,
            "smtp_username": "envcat",
            "smtp_password": "mail-password-canary",
        }
        settings = make_settings(sqlite_url, redis_url, broker_url, **smtp)
        migrated(settings.database_url)
        app = create_service_app(settings)
        with app.app_context():
            add_member("u-ada", TENANT, "owner", email="ada@example.test", kind="org")
            seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", CANARY)])
            notifications.notify_request(_pending_request(app))
        inbox.wait_for(lambda m: m["To"] == "ada@example.test")
    assert logins == [(b"envcat", b"mail-password-canary", True)]  # over TLS only


def test_a_retry_after_a_refusal_mid_list_mails_only_who_did_not_get_it(
    sqlite_url: str, redis_url: str, broker_url: str, inbox: SmtpInbox
) -> None:
    asked: dict[str, int] = {}

    def refuse(address: str) -> str | None:
        asked[address] = asked.get(address, 0) + 1
        if address.startswith("never@"):
            return "550 no such mailbox"  # for good: skipped, the others still get theirs
        if address.startswith("later@") and asked[address] == 1:
            return "451 try again later"  # for now: the task is retried
        return None

    inbox.refuse = refuse
    _, app = _app(sqlite_url, redis_url, broker_url, inbox.port)
    with app.app_context():
        for user, email in (("u-a", "ada@example.test"), ("u-l", "later@example.test")):
            add_member(user, TENANT, "member", email=email, kind="org")
        add_member("u-n", TENANT, "member", email="never@example.test", kind="org")
        seed_bundle(TENANT, "production/api", [SeedKey("API_TOKEN", CANARY)])
        request_id = _pending_request(app)
        with pytest.raises(outbound.MailRetry):
            notifications.notify_request(request_id)
        notifications.notify_request(request_id)  # the retry
        notifications.notify_request(request_id)  # and a redelivery after it
    delivered = sorted(str(m["To"]) for m in inbox.messages)
    assert delivered == ["ada@example.test", "later@example.test"]
    assert asked["later@example.test"] == 2 and asked["never@example.test"] == 1
    assert issubclass(outbound.MailRetry, tuple(notification_tasks.NOTIFY_RETRY_ON))
