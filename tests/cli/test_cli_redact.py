"""The command line shown to the approver carries no password (issue #11)."""

from __future__ import annotations

import shlex

import pytest

from envcat.cli.redact import redact_command, redact_text

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        ("mysql -uroot -phunter2 app", "mysql -uroot '-p***' app"),
        ("mysql --password=hunter2 app", "mysql '--password=***' app"),
        ("mysql --password hunter2 app", "mysql --password '***' app"),
        ("psql --db-password=hunter2", "psql '--db-password=***'"),
        ("tool --token hunter2 --verbose", "tool --token '***' --verbose"),
        ("tool --api-key=hunter2", "tool '--api-key=***'"),
        ("tool --API-KEY hunter2", "tool --API-KEY '***'"),
        ("tool -secret hunter2", "tool -secret '***'"),
        ("tool --auth hunter2", "tool --auth '***'"),
        ("tool --passwd hunter2", "tool --passwd '***'"),
        ("env API_KEY=hunter2 ./app", "env 'API_KEY=***' ./app"),
        ("env PGPASSWORD=hunter2 psql", "env 'PGPASSWORD=***' psql"),
        ("env GITHUB_TOKEN=hunter2 gh", "env 'GITHUB_TOKEN=***' gh"),
        ("env client_secret=hunter2 x", "env 'client_secret=***' x"),
        ("make DEPLOY_KEY=hunter2 deploy", "make 'DEPLOY_KEY=***' deploy"),
        (
            "curl https://api.test/x?token=hunter2&page=2",
            "curl 'https://api.test/x?token=***&page=2'",
        ),
        ("git clone https://bob:hunter2@git.test/r", "git clone 'https://bob:***@git.test/r'"),
        ("curl -u bob:hunter2 https://x", "curl -u 'bob:***' https://x"),
        ("curl --user bob:hunter2 https://x", "curl --user 'bob:***' https://x"),
        (
            "curl -H 'Authorization: Bearer hunter2' https://x",
            "curl -H 'Authorization: ***' https://x",
        ),
        ("curl -H 'X-Api-Key: hunter2' https://x", "curl -H 'X-Api-Key: ***' https://x"),
        (
            "sh -c 'DB_PASSWORD=hunter2 ./app --token hunter2'",
            "sh -c 'DB_PASSWORD=*** ./app --token ***'",
        ),
        ("sh -c 'mysql -phunter2 -e \"select 1\"'", "sh -c 'mysql -p*** -e \"select 1\"'"),
        (
            "sh -c 'export SECRET_KEY=\"hunter2 with spaces\"; ./app'",
            "sh -c 'export SECRET_KEY=***; ./app'",
        ),
        ("./manage.py runserver 0.0.0.0:8000", "./manage.py runserver 0.0.0.0:8000"),
        ("python app.py --port 8000 --debug", "python app.py --port 8000 --debug"),
        ("ls -la /tmp", "ls -la /tmp"),
    ],
)
def test_redacts_secret_values_in_many_shapes(argv: str, shown: str) -> None:
    redacted = shlex.join(redact_command(shlex.split(argv)))
    assert redacted == shown
    assert SECRET not in redacted


def test_a_trailing_sensitive_flag_without_value_is_kept() -> None:
    assert redact_command(["tool", "--token"]) == ["tool", "--token"]


def test_our_own_key_flag_is_not_redacted() -> None:
    argv = ["envcat", "get", "--key", "DATABASE_URL", "--key=API_KEY", "-k", "API_KEY"]
    assert redact_command(argv, keep=("--key",)) == argv


def test_redact_text_leaves_plain_text_alone() -> None:
    assert redact_text("hello world") == "hello world"
