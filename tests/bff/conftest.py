"""Fixtures for bff tests (helpers live in tests/support/bff.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.bff import Browser, module_stack, new_user
from tests.support.inboxes import SmtpInbox, WebhookInbox, smtp_inbox, webhook_inbox
from tests.support.stack import LiveStack


@pytest.fixture(scope="module")
def stack(
    redis_base_url: str, redis_dbs: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """A live stack shared by the tests of one module; tests use unique accounts."""
    with module_stack(redis_base_url, redis_dbs, tmp_path_factory) as shared:
        yield shared


@pytest.fixture
def ada(stack: LiveStack) -> Browser:
    return new_user(stack, "ada")


@pytest.fixture(scope="module")
def inbox() -> Iterator[SmtpInbox]:
    """A real SMTP server on loopback for one module (a stack's SMTP_PORT points at it)."""
    with smtp_inbox() as server:
        yield server


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookInbox]:
    """A real webhook receiver on loopback for one module."""
    with webhook_inbox() as server:
        yield server
