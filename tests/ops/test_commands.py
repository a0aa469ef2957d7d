"""init-db, create-user and verify-audit against a real database and the real api."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import create_engine, inspect, text, update

from envcat.core import signing
from envcat.core.settings import Settings
from envcat.models import AuditEvent, Tenant, User, db
from envcat.ops.commands import server
from envcat.ops.config import ensure_data_dir, ensure_secrets
from envcat.services import audit
from tests.support.signed import SignedClient

PASSWORD = "canary-Pa55word-7f3e"


def _invoke(args: list[str], env: dict[str, str], stdin: str | None = None):
    return CliRunner().invoke(server, args, env=env, input=stdin)


def _tables(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_init_db_creates_the_schema_and_is_idempotent(
    server_env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    first = _invoke(["init-db", "--data-dir", str(tmp_path)], server_env)
    assert first.exit_code == 0, first.output
    assert first.stderr == "The database schema is up to date.\n"
    tables = _tables(settings.database_url)
    assert {"tenants", "users", "bundles", "keys", "audit_events", "alembic_version"} <= tables
    second = _invoke(["init-db", "--data-dir", str(tmp_path)], server_env)
    assert second.exit_code == 0, second.output
    assert _tables(settings.database_url) == tables


def test_init_db_defaults_to_sqlite_and_secrets_in_the_data_dir(tmp_path: Path) -> None:
    # Nothing in the environment: secrets.env (as `up` writes it) and the data dir fill in.
    data_dir = ensure_data_dir(tmp_path / "data")
    ensure_secrets(data_dir)
    result = CliRunner().invoke(server, ["init-db", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "alembic_version" in _tables(f"sqlite:///{data_dir / 'envcat.db'}")


def _sign_in(api_app: Flask, settings: Settings, email: str, password: str):
    bff = SignedClient(
        api_app.test_client(),
        settings.bff_shared_secret.get_secret_value(),
        signing.BFF_USER_ID,
        signing.NO_TENANT,
    )
    return bff.post("/api/v1/internal/local-auth/sign-in", {"email": email, "password": password})


def test_create_user_from_stdin_can_then_sign_in(
    api_app: Flask, settings: Settings, server_env: dict[str, str], tmp_path: Path
) -> None:
    args = ["create-user", "--email", "Ada@Example.com", "--password-stdin"]
    result = _invoke([*args, "--data-dir", str(tmp_path)], server_env, stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Created ada@example.com (user usr_")
    assert PASSWORD not in result.output
    reply = _sign_in(api_app, settings, "ada@example.com", PASSWORD)
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert body["user"]["email"] == "ada@example.com"
    assert body["role"] == "owner"
    assert _sign_in(api_app, settings, "ada@example.com", PASSWORD + "x").status_code == 401


def test_create_user_prompts_twice_without_echo(
    api_app: Flask, settings: Settings, server_env: dict[str, str], tmp_path: Path
) -> None:
    args = ["create-user", "--email", "grace@example.com", "--data-dir", str(tmp_path)]
    result = _invoke(args, server_env, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Password:" in result.stderr
    assert "Repeat for confirmation:" in result.stderr
    assert PASSWORD not in result.output
    assert _sign_in(api_app, settings, "grace@example.com", PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-email", PASSWORD, "envcat: "),
        ("short@example.com", "123456789", "envcat: "),
        ("empty@example.com", "", "envcat: no password on stdin"),
    ],
)
def test_create_user_refuses_bad_input_in_one_line(
    api_app: Flask,
    server_env: dict[str, str],
    tmp_path: Path,
    email: str,
    password: str,
    message: str,
) -> None:
    args = ["create-user", "--email", email, "--password-stdin", "--data-dir", str(tmp_path)]
    result = _invoke(args, server_env, stdin=password + "\n")
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output
    if password:
        assert password not in result.output
    assert db.session.query(User).filter_by(email=email).first() is None


def test_create_user_twice_is_a_conflict(
    api_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    args = ["create-user", "--email", "twice@example.com", "--password-stdin"]
    args += ["--data-dir", str(tmp_path)]
    assert _invoke(args, server_env, stdin=PASSWORD).exit_code == 0
    again = _invoke(args, server_env, stdin=PASSWORD)
    assert again.exit_code == 1
    assert again.stderr.startswith("envcat: ")
    assert db.session.query(User).filter_by(email="twice@example.com").count() == 1


def test_create_user_on_an_unmigrated_database_is_one_line(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**server_env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    args = ["create-user", "--email", "x@example.com", "--password-stdin"]
    result = _invoke([*args, "--data-dir", str(tmp_path)], env, stdin=PASSWORD)
    assert result.exit_code == 1
    assert result.stderr == (
        "envcat: database error (OperationalError); is DATABASE_URL right and the schema "
        "migrated (envcat server init-db)?\n"
    )


def _record_events(tenants: list[str]) -> None:
    for tenant in tenants:
        db.session.add(Tenant(id=tenant, name=tenant, kind="personal"))
    db.session.commit()
    for number in range(3):
        for tenant in tenants:
            audit.record(tenant, "usr_1", "bundle.created", f"b{number}", details={"n": number})


def test_verify_audit_passes_an_intact_log(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    _record_events(["ten_a", "ten_b"])
    result = _invoke(["verify-audit", "--data-dir", str(tmp_path)], server_env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Audit log intact: 6 events in 2 tenant(s).\n"


def test_verify_audit_of_an_empty_log_passes(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    result = _invoke(["verify-audit", "--data-dir", str(tmp_path)], server_env)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Audit log intact: 0 events in 0 tenant(s).\n"


def test_verify_audit_names_the_first_altered_event(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    _record_events(["ten_a", "ten_b"])
    target = db.session.execute(
        text("SELECT id FROM audit_events WHERE tenant_id = 'ten_b' ORDER BY id LIMIT 1 OFFSET 1")
    ).scalar_one()
    db.session.execute(update(AuditEvent).where(AuditEvent.id == target).values(actor="mallory"))
    db.session.commit()
    result = _invoke(["verify-audit", "--data-dir", str(tmp_path)], server_env)
    assert result.exit_code == 1
    assert f"tenant ten_b: audit chain broken at event {target}\n" in result.stderr
    assert result.stderr.endswith(
        f"envcat: the audit log was altered: first broken event {target} (tenant ten_b); "
        "1 tenant(s) affected\n"
    )
    assert "ten_a" not in result.stderr


def test_verify_audit_notices_a_deleted_event(
    service_app: Flask, server_env: dict[str, str], tmp_path: Path
) -> None:
    _record_events(["ten_a"])
    first = db.session.execute(text("SELECT min(id) FROM audit_events")).scalar_one()
    db.session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": first})
    db.session.commit()
    result = _invoke(["verify-audit", "--data-dir", str(tmp_path)], server_env)
    assert result.exit_code == 1
    assert "first broken event" in result.stderr
