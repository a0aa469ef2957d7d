"""Fixtures of the security tests: the passkey world (helpers: tests/support/passkey_world.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bff.browser_support import chromium
from tests.support.bff import module_stack
from tests.support.passkey_world import (
    CANARY,
    OTHER_CANARY,
    WaitingCli,
    World,
    register_passkey,
    sign_in,
)
from tests.support.stack import LiveStack

__all__ = ["chromium"]  # the browser fixture the world signs in with


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    with module_stack(
        redis_base_url, redis_dbs, tmp_path_factory, public_host="localhost"
    ) as shared:
        yield shared


@pytest.fixture(scope="module")
def world(stack: LiveStack, chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    ada = sign_in(stack, chromium, "ada")
    register_passkey(stack, ada, "ada's laptop")
    with stack.signed(ada.user_id, ada.tenant_id) as api:
        bundle = api.post("/api/v1/bundles", json={"name": "demo/app"}).json()
        for name, value in (("DATABASE_URL", CANARY), ("OTHER", OTHER_CANARY)):
            added = api.post(
                f"/api/v1/bundles/{bundle['id']}/keys", json={"name": name, "value": value}
            )
            assert added.status_code == 201, added.text
    project = tmp_path_factory.mktemp("project")
    (project / ".envcat.toml").write_text(
        f'server = "{stack.settings.public_url}"\nworkspace = "{ada.workspace}"\n'
        'bundle = "demo/app"\nallow_vars = []\n'
    )
    return World(ada, bundle["id"], project, tmp_path_factory.mktemp("home"))


@pytest.fixture
def waiting(world: World) -> Iterator[Any]:
    started: list[WaitingCli] = []

    def start(*argv: str, cwd: Path | None = None) -> WaitingCli:
        cli = WaitingCli(world, *argv, cwd=cwd)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.stop()
